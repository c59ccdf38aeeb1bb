//! Blobs: file content split into content-defined chunks, addressed by their BLAKE3 hash.
//!
//! A blob (an entry's media resource, a mapped file) is cut into chunks by
//! [FastCDC](https://www.usenix.org/conference/atc16/technical-sessions/presentation/xia)
//! ([`chunk_boundaries`]: 16 KiB minimum, 64 KiB average, 256 KiB maximum), so an edit in the
//! middle of a file changes only the chunks around it. Each chunk is named by the BLAKE3 hash of
//! its bytes ([`ChunkHash`]); a [`Manifest`] lists a blob's chunks in order and is itself stored
//! and transferred like a chunk, under its own hash, which is the blob's address
//! (`MediaRef::hash`, `blake3:<hex>`). Stores and transfers therefore deal only in hashed
//! objects, which makes deduplication and resumption fall out: an object is either wholly
//! present or missing.
//!
//! [`pack`] is the wire form for moving many objects in one request; everything here is pure
//! (no I/O), so stores and transports live in `mesh-client` and `mesh-hub`.
//!
//! ```
//! use mesh_core::blob::{Manifest, ChunkHash, chunk_boundaries};
//! let data = vec![7u8; 300_000];
//! let chunks: Vec<_> = chunk_boundaries(&data)
//!     .map(|r| (ChunkHash::of(&data[r.clone()]), r.len() as u32))
//!     .collect();
//! let manifest = Manifest::new(chunks).unwrap();
//! assert_eq!(manifest.length(), 300_000);
//! let bytes = manifest.encode();
//! assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
//! ```

mod chunker;
mod hash;
mod manifest;
pub mod pack;

pub use chunker::{chunk_boundaries, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
pub use hash::ChunkHash;
pub use manifest::{ChunkRef, Manifest};

/// The largest object (chunk or manifest) accepted anywhere, in bytes: a manifest of this size
/// describes a blob of about 29 TiB at the average chunk size.
pub const MAX_OBJECT: usize = 64 * 1024 * 1024;

/// The most bytes of objects one `get_objects` response carries (a hub or peer may choose
/// less): part of the protocol, so that a client knows how much to buffer.
pub const MAX_OBJECTS_RESPONSE: usize = 8 << 20;
