//! Container ids and names as Docker users know them: 64 random hex digits (12 shown) and, when
//! the user gives no name, an `adjective_noun` pair. Our own small word list: the names only need
//! to be pronounceable and mostly unique, and a collision is retried by the caller.

use std::io::Read;

const ADJECTIVES: &[&str] = &[
    "admiring",
    "brave",
    "calm",
    "clever",
    "dazzling",
    "eager",
    "fervent",
    "focused",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "lucid",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];

const NOUNS: &[&str] = &[
    "babbage",
    "curie",
    "darwin",
    "einstein",
    "euler",
    "faraday",
    "gauss",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "lamport",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wozniak",
    "yalow",
    "zuse",
    "galois",
    "hamilton",
    "knuth",
    "liskov",
    "mirzakhani",
    "ramanujan",
];

/// `n` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A new 64-hex-digit container id.
pub fn new_id() -> std::io::Result<String> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random `adjective_noun`; `salt` > 0 appends a number (after collisions).
pub fn random_name(salt: u32) -> std::io::Result<String> {
    let r: [u8; 4] = random_bytes()?;
    let a = ADJECTIVES[usize::from(r[0]) % ADJECTIVES.len()];
    let n = NOUNS[usize::from(r[1]) % NOUNS.len()];
    Ok(if salt == 0 {
        format!("{a}_{n}")
    } else {
        format!("{a}_{n}{}", u32::from(r[2]) * 256 + u32::from(r[3]))
    })
}

/// Docker's rule for user-given names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here at most 128 bytes.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_id().unwrap());
        let n = random_name(0).unwrap();
        assert!(valid_name(&n) && n.contains('_'), "{n}");
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x") && !valid_name("a/b") && !valid_name(""));
    }
}
