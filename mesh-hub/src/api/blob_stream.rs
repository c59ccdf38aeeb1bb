//! Reading stored objects in bounded pieces, and the hub's limit on a blob's size.
//!
//! A single object (up to `mesh_core::blob::MAX_OBJECT`) is sent [`READ_PIECE`] bytes at a
//! time, each piece read from the store on its own (SQLite incremental blob I/O), so a reader
//! holds one piece whatever the object's size and however slowly it reads: the next piece is
//! read only when the connection has taken the previous one.

use std::io;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures::stream;
use mesh_core::blob::{ChunkHash, Manifest};
use mesh_core::id::FolderId;
use mesh_store::BlobStore;

use crate::error::ApiError;

/// How many bytes of an object one read takes.
pub(crate) const READ_PIECE: usize = 256 << 10;

/// A blob the hub will not take or serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BlobLimit {
    /// A manifest declares more bytes than the hub's maximum blob size.
    #[error("manifest {hash} declares a blob of {declared} bytes; this hub takes blobs of at most {max} bytes")]
    TooLarge {
        /// The manifest's hash, hex.
        hash: String,
        /// Its declared length.
        declared: u64,
        /// The hub's limit.
        max: u64,
    },
}

impl From<BlobLimit> for ApiError {
    fn from(e: BlobLimit) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "blob_too_large",
            e.to_string(),
        )
    }
}

/// Checks a manifest's declared length against the hub's limit (its length is the sum of its
/// chunks' lengths: `Manifest::decode` refuses any other).
pub(crate) fn check_manifest(m: &Manifest, hash: &ChunkHash, max: u64) -> Result<(), BlobLimit> {
    if m.length() > max {
        return Err(BlobLimit::TooLarge {
            hash: hash.hex(),
            declared: m.length(),
            max,
        });
    }
    Ok(())
}

/// Checks every object of an upload that is a manifest.
pub(crate) fn check_uploaded(objects: &[(ChunkHash, Vec<u8>)], max: u64) -> Result<(), BlobLimit> {
    for (h, data) in objects {
        if let Ok(m) = Manifest::decode(data) {
            check_manifest(&m, h, max)?;
        }
    }
    Ok(())
}

/// The body of bytes `pos..end` of object `hash` that `folder` claims, read a piece at a time.
/// If the object shrinks or disappears on the way, the body ends with an error (the client
/// sees a cut answer, never wrong bytes).
pub(crate) fn object_body(
    blobs: BlobStore,
    folder: FolderId,
    hash: ChunkHash,
    pos: u64,
    end: u64,
) -> Body {
    let pieces = stream::unfold(
        (blobs, folder, hash, pos, end),
        |(blobs, folder, hash, pos, end)| async move {
            if pos >= end {
                return None;
            }
            let want = (end - pos).min(READ_PIECE as u64) as usize;
            let (b, f) = (blobs.clone(), folder.clone());
            let read = tokio::task::spawn_blocking(move || b.read_for(&f, &hash, pos, want)).await;
            let piece = match read {
                Ok(Ok(Some(d))) if d.len() == want => Ok(Bytes::from(d)),
                Ok(Ok(_)) => Err(io::Error::other(format!(
                    "object {hash} changed while sent"
                ))),
                Ok(Err(e)) => Err(io::Error::other(e.to_string())),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            let next = if piece.is_ok() {
                pos + want as u64
            } else {
                end
            };
            Some((piece, (blobs, folder, hash, next, end)))
        },
    );
    Body::from_stream(pieces)
}
