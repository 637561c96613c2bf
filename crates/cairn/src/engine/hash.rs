//! SHA-256 and its lowercase hex form: what checksums, content hashes and chains are made of.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The SHA-256 of an attachment's content, as 64 lowercase hex digits: the blob's name in the
/// store, the same on every machine for the same bytes. Serialised as the hex string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

impl ContentHash {
    /// Checks that `text` is a content hash (64 lowercase hex digits).
    pub fn parse(text: &str) -> Result<ContentHash> {
        if is_hex_digest(text) {
            Ok(ContentHash(text.to_string()))
        } else {
            Err(Error::InvalidInput {
                source_name: "blob hash".into(),
                reason: format!("{text:?} is not a SHA-256 hash (64 lowercase hex digits)"),
            })
        }
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(hex(&sha256(bytes)))
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A hash already known to be one (read back from cairn's own tables or computed).
    pub(crate) fn trusted(hex: String) -> ContentHash {
        ContentHash(hex)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ContentHash {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ContentHash {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ContentHash {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for ContentHash {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl TryFrom<String> for ContentHash {
    type Error = Error;
    fn try_from(text: String) -> Result<ContentHash> {
        ContentHash::parse(&text)
    }
}

impl From<ContentHash> for String {
    fn from(hash: ContentHash) -> String {
        hash.0
    }
}

/// True for 64 lowercase hex digits.
pub(crate) fn is_hex_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ContentHash;

    #[test]
    fn a_content_hash_is_64_lowercase_hex_digits() {
        let hash = ContentHash::of(b"abc");
        assert_eq!(ContentHash::parse(hash.as_str()).expect("parses"), hash);
        for bad in ["", "abc", &hash.as_str().to_uppercase(), &format!("{hash}0"), &hash.as_str().replace('a', "g")] {
            assert!(ContentHash::parse(bad).expect_err(bad).kind() == crate::ErrorKind::InvalidInput);
        }
        let json = serde_json::to_string(&hash).expect("json");
        assert_eq!(json, format!("\"{hash}\""));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).expect("back"), hash);
        assert!(serde_json::from_str::<ContentHash>("\"not a hash\"").is_err());
    }

    #[test]
    fn hex_of_a_known_digest() {
        assert_eq!(
            super::hex(&super::sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
