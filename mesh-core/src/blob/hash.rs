//! Content addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// The BLAKE3 hash of an object's bytes: the name of a chunk or a manifest.
///
/// Its text form is `blake3:` followed by 64 lowercase hex digits; [`ChunkHash::hex`] is the
/// bare digits (used in URLs).
///
/// ```
/// use mesh_core::blob::ChunkHash;
/// let h = ChunkHash::of(b"hello");
/// let text = h.to_string();
/// assert!(text.starts_with("blake3:"));
/// assert_eq!(text.parse::<ChunkHash>().unwrap(), h);
/// assert_eq!(ChunkHash::from_hex(&h.hex()).unwrap(), h);
/// assert!("blake3:xyz".parse::<ChunkHash>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash([u8; 32]);

const PREFIX: &str = "blake3:";

impl ChunkHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkHash(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `data` hashes to this.
    pub fn verifies(&self, data: &[u8]) -> bool {
        ChunkHash::of(data) == *self
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 15) as usize] as char);
        }
        s
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self> {
        let bad = |reason: &str| CoreError::InvalidBlob(format!("hash {s:?}: {reason}"));
        if s.len() != 64 {
            return Err(bad("expected 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or_else(|| bad("not a hex digit"))?;
            let lo = hex_digit(pair[1]).ok_or_else(|| bad("not a hex digit"))?;
            out[i] = hi << 4 | lo;
        }
        Ok(ChunkHash(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", &self.hex()[..16])
    }
}

impl FromStr for ChunkHash {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix(PREFIX) {
            Some(hex) => ChunkHash::from_hex(hex),
            None => Err(CoreError::InvalidBlob(format!(
                "hash {s:?}: expected the form blake3:<64 hex digits>"
            ))),
        }
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
