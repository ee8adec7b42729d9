//! Fixed-width integers at byte offsets of on-disk structures. Every reader of a disk format
//! uses these: an offset outside the slice (or one that would overflow) reads as 0 rather than
//! panicking, because callers check structure lengths first and hostile input must never panic.

macro_rules! field {
    ($name:ident, $ty:ty, $from:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(b: &[u8], at: usize) -> $ty {
            at.checked_add(std::mem::size_of::<$ty>())
                .and_then(|end| b.get(at..end))
                .and_then(|s| s.try_into().ok())
                .map_or(0, <$ty>::$from)
        }
    };
}

field!(
    le16,
    u16,
    from_le_bytes,
    "Little-endian u16 at `at`; 0 when out of range."
);
field!(
    le32,
    u32,
    from_le_bytes,
    "Little-endian u32 at `at`; 0 when out of range."
);
field!(
    le64,
    u64,
    from_le_bytes,
    "Little-endian u64 at `at`; 0 when out of range."
);
field!(
    be16,
    u16,
    from_be_bytes,
    "Big-endian u16 at `at`; 0 when out of range."
);
field!(
    be32,
    u32,
    from_be_bytes,
    "Big-endian u32 at `at`; 0 when out of range."
);
field!(
    be64,
    u64,
    from_be_bytes,
    "Big-endian u64 at `at`; 0 when out of range."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_range_and_zero_outside() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(be16(&b, 0), 0x0102);
        assert_eq!(le32(&b, 1), 0x0504_0302);
        assert_eq!(be32(&b, 1), 0x0203_0405);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(be64(&b, 0), 0x0102_0304_0506_0708);
        assert_eq!(le32(&b, 6), 0, "straddles the end");
        assert_eq!(be64(&b, usize::MAX - 2), 0, "offset overflow");
    }
}
