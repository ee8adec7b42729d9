//! POSIX pax extended-header records (`"%d %s=%s\n"`, the length counting itself), written and
//! parsed here rather than through the tar crate: its parser splits records at newlines, which
//! breaks on binary xattr values (a `security.capability` can contain 0x0a), and its builder has
//! no API for raw-byte records.

use super::entry::Timestamp;

/// Appends one record `"<len> <key>=<value>\n"` to `out`.
pub(crate) fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length field counts its own digits: start from the payload and grow until stable.
    let payload = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = payload + 1;
    loop {
        let digits = len.to_string().len();
        if payload + digits == len {
            break;
        }
        len = payload + digits;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Formats a time as pax does: `secs[.fraction]`, the fraction without trailing zeros, negative
/// times as a signed decimal (-1.5 is secs -2, nanos 500000000).
pub(crate) fn format_time(t: Timestamp) -> String {
    let total = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.unsigned_abs();
    let whole = abs / 1_000_000_000;
    let frac = abs % 1_000_000_000;
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let f = format!("{frac:09}");
        format!("{sign}{whole}.{}", f.trim_end_matches('0'))
    }
}

/// Parses a pax time (`-12.5`, `1700000000.123456789`, `7`); extra fraction digits beyond
/// nanoseconds are ignored. None for anything else.
pub(crate) fn parse_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    let (secs, nanos) = if neg {
        if nanos == 0 {
            (whole.checked_neg()?, 0)
        } else {
            (whole.checked_neg()?.checked_sub(1)?, 1_000_000_000 - nanos)
        }
    } else {
        (whole, nanos)
    };
    Some(Timestamp {
        secs,
        nanos: u32::try_from(nanos).ok()?,
    })
}

/// One pax record: (key, value), both raw bytes.
pub(crate) type Record<'a> = (&'a [u8], &'a [u8]);

/// Splits a pax extended header's data into (key, value) records using the length prefix, so
/// values may hold any byte. Err names the byte offset of the first bad record.
pub(crate) fn parse_records(data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        // Some writers pad the data with NULs after the last record.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| format!("record at byte {pos} has no length field"))?;
        let len: usize = std::str::from_utf8(rest.get(..space).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("record at byte {pos} has a bad length field"))?;
        let record = rest
            .get(..len)
            .filter(|r| len > space + 1 && r.last() == Some(&b'\n'))
            .ok_or_else(|| format!("record at byte {pos} has length {len} that does not fit"))?;
        let kv = record.get(space + 1..len - 1).unwrap_or_default();
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("record at byte {pos} has no '='"))?;
        let (k, v) = kv.split_at(eq);
        out.push((k, v.get(1..).unwrap_or_default()));
        pos += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_counts_itself() {
        let mut v = Vec::new();
        push_record(&mut v, b"path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        // Crossing a digit boundary: payload 97 + 2 digits = 99; payload 98 -> 101 (3 digits).
        for n in 85..100 {
            let mut v = Vec::new();
            let val = vec![b'x'; n];
            push_record(&mut v, b"k", &val);
            let recs = parse_records(&v).unwrap();
            assert_eq!(recs, vec![(&b"k"[..], &val[..])]);
        }
    }

    #[test]
    fn binary_values_survive() {
        let mut v = Vec::new();
        push_record(
            &mut v,
            b"SCHILY.xattr.security.capability",
            b"\x01\n\x00=\n",
        );
        push_record(&mut v, b"mtime", b"-1.5");
        let recs = parse_records(&v).unwrap();
        assert_eq!(recs[0].1, b"\x01\n\x00=\n");
        assert_eq!(recs[1], (&b"mtime"[..], &b"-1.5"[..]));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(parse_records(b"99 path=x\n").is_err());
        assert!(parse_records(b"xx path=x\n").is_err());
        assert!(parse_records(b"9 pathx\n").is_err());
        assert!(parse_records(b"0 \n").is_err());
        assert!(parse_records(b"18446744073709551615 a=b\n").is_err());
    }

    #[test]
    fn times_round_trip() {
        for (secs, nanos, text) in [
            (0, 0, "0"),
            (-1, 500_000_000, "-0.5"),
            (-2, 500_000_000, "-1.5"),
            (-86400, 0, "-86400"),
            (1_700_000_000, 123_000_000, "1700000000.123"),
            (99_999_999_999, 1, "99999999999.000000001"),
        ] {
            let t = Timestamp { secs, nanos };
            assert_eq!(format_time(t), text);
            assert_eq!(parse_time(text.as_bytes()), Some(t));
        }
        assert_eq!(parse_time(b"1.1234567891").unwrap().nanos, 123_456_789);
        assert_eq!(parse_time(b"abc"), None);
        assert_eq!(parse_time(b"-"), None);
        assert_eq!(parse_time(b"99999999999999999999"), None);
    }
}
