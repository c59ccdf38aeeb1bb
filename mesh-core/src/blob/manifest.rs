//! A blob's list of chunks.

use crate::blob::{ChunkHash, MAX_CHUNK, MAX_OBJECT};
use crate::error::{CoreError, Result};

/// One chunk of a blob: its hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// The chunk's content address.
    pub hash: ChunkHash,
    /// Its length in bytes (1 ..= [`MAX_CHUNK`]).
    pub len: u32,
}

/// The ordered chunks of a blob. Encoded (see [`Manifest::encode`]) it is an object like any
/// chunk, and its hash ([`Manifest::hash`]) is the blob's address.
///
/// Encoding, all integers big-endian: the magic `MSHM`, a version byte (1), the chunk count
/// (u32), the blob length (u64), then per chunk its 32 hash bytes and its length (u32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    chunks: Vec<ChunkRef>,
    length: u64,
}

const MAGIC: &[u8; 4] = b"MSHM";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 4 + 8;
const PER_CHUNK: usize = 32 + 4;

impl Manifest {
    /// A manifest of these chunks, in order. Refuses empty or over-long chunks and manifests
    /// whose encoding would exceed [`MAX_OBJECT`].
    pub fn new(chunks: impl IntoIterator<Item = (ChunkHash, u32)>) -> Result<Self> {
        let chunks: Vec<ChunkRef> = chunks
            .into_iter()
            .map(|(hash, len)| ChunkRef { hash, len })
            .collect();
        Self::checked(chunks)
    }

    fn checked(chunks: Vec<ChunkRef>) -> Result<Self> {
        if HEADER + chunks.len() * PER_CHUNK > MAX_OBJECT {
            return Err(CoreError::InvalidBlob(format!(
                "manifest of {} chunks is too large",
                chunks.len()
            )));
        }
        let mut length = 0u64;
        for c in &chunks {
            if c.len == 0 || c.len as usize > MAX_CHUNK {
                return Err(CoreError::InvalidBlob(format!(
                    "chunk {} has length {} (allowed 1..={MAX_CHUNK})",
                    c.hash, c.len
                )));
            }
            length += u64::from(c.len);
        }
        Ok(Manifest { chunks, length })
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// The blob's length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.chunks.len() * PER_CHUNK);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        for c in &self.chunks {
            out.extend_from_slice(c.hash.as_bytes());
            out.extend_from_slice(&c.len.to_be_bytes());
        }
        out
    }

    /// The blob's address: the hash of [`Manifest::encode`].
    pub fn hash(&self) -> ChunkHash {
        ChunkHash::of(&self.encode())
    }

    /// Parses an encoded manifest, checking every field.
    ///
    /// ```
    /// use mesh_core::blob::Manifest;
    /// assert!(Manifest::decode(b"MSHM\x01garbage").is_err());
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| CoreError::InvalidBlob(format!("manifest: {reason}"));
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(bad("not a manifest (bad magic or too short)"));
        }
        if bytes[4] != VERSION {
            return Err(bad(&format!("unknown version {}", bytes[4])));
        }
        let count = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[9..17]);
        let length = u64::from_be_bytes(len8);
        let body = &bytes[HEADER..];
        if body.len() != count.saturating_mul(PER_CHUNK) {
            return Err(bad(&format!(
                "{count} chunks announced, {} bytes of chunk list",
                body.len()
            )));
        }
        let chunks = body
            .chunks_exact(PER_CHUNK)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(&c[..32]);
                ChunkRef {
                    hash: ChunkHash::from_bytes(h),
                    len: u32::from_be_bytes([c[32], c[33], c[34], c[35]]),
                }
            })
            .collect();
        let m = Self::checked(chunks)?;
        if m.length != length {
            return Err(bad(&format!(
                "length {length} announced, chunks add up to {}",
                m.length
            )));
        }
        Ok(m)
    }
}
