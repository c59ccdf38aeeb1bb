//! Packs: many objects (chunks, manifests) in one body, and lists of hashes.
//!
//! A pack is a sequence of frames, each the object's 32 hash bytes, its length (u32,
//! big-endian) and its bytes. A hash list is a sequence of 32-byte hashes. Both are what the
//! blob endpoints of the hub carry (`application/x-mesh-pack`, `application/x-mesh-hashes`);
//! decoding verifies every object against its hash, so a pack can never plant content under a
//! name that is not its own.
//!
//! ```
//! use mesh_core::blob::{pack, ChunkHash};
//! let objects = vec![b"one".to_vec(), b"two".to_vec()];
//! let mut body = Vec::new();
//! for o in &objects {
//!     pack::write_frame(&mut body, &ChunkHash::of(o), o);
//! }
//! let decoded = pack::decode(&body).unwrap();
//! assert_eq!(decoded[1].1, b"two");
//! let mut bad = body.clone();
//! *bad.last_mut().unwrap() ^= 1;
//! assert!(pack::decode(&bad).is_err());
//! ```

use crate::blob::{ChunkHash, MAX_OBJECT};
use crate::error::{CoreError, Result};

/// Bytes of a frame besides the object itself.
pub const FRAME_OVERHEAD: usize = 36;

/// Appends one frame.
pub fn write_frame(out: &mut Vec<u8>, hash: &ChunkHash, data: &[u8]) {
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Splits a pack into its verified objects. Fails on a truncated frame, an object over
/// [`MAX_OBJECT`] or an object whose bytes do not hash to its name.
pub fn decode(body: &[u8]) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (hash, data, tail) = next_frame(rest)?;
        if !hash.verifies(data) {
            return Err(CoreError::InvalidBlob(format!(
                "pack: object {hash} does not match its content"
            )));
        }
        out.push((hash, data.to_vec()));
        rest = tail;
    }
    Ok(out)
}

/// Reads the first complete frame of `buf` without verifying it: `Ok(None)` when `buf` holds
/// only part of a frame (a streaming reader waits for more bytes).
pub fn peek_frame(buf: &[u8]) -> Result<Option<(ChunkHash, &[u8], usize)>> {
    if buf.len() < FRAME_OVERHEAD {
        return Ok(None);
    }
    let len = frame_len(buf)?;
    if buf.len() < FRAME_OVERHEAD + len {
        return Ok(None);
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(&buf[..32]);
    Ok(Some((
        ChunkHash::from_bytes(h),
        &buf[FRAME_OVERHEAD..FRAME_OVERHEAD + len],
        FRAME_OVERHEAD + len,
    )))
}

fn frame_len(buf: &[u8]) -> Result<usize> {
    let len = u32::from_be_bytes([buf[32], buf[33], buf[34], buf[35]]) as usize;
    if len > MAX_OBJECT {
        return Err(CoreError::InvalidBlob(format!(
            "pack: object of {len} bytes is over the {MAX_OBJECT}-byte limit"
        )));
    }
    Ok(len)
}

fn next_frame(buf: &[u8]) -> Result<(ChunkHash, &[u8], &[u8])> {
    match peek_frame(buf)? {
        Some((hash, data, used)) => Ok((hash, data, &buf[used..])),
        None => Err(CoreError::InvalidBlob("pack: truncated frame".into())),
    }
}

/// Encodes a list of hashes.
pub fn encode_hashes<'a>(hashes: impl IntoIterator<Item = &'a ChunkHash>) -> Vec<u8> {
    hashes
        .into_iter()
        .flat_map(|h| h.as_bytes().iter().copied())
        .collect()
}

/// Decodes a list of hashes (its length must be a multiple of 32).
pub fn decode_hashes(body: &[u8]) -> Result<Vec<ChunkHash>> {
    if body.len() % 32 != 0 {
        return Err(CoreError::InvalidBlob(format!(
            "hash list of {} bytes is not a multiple of 32",
            body.len()
        )));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChunkHash::from_bytes(h)
        })
        .collect())
}
