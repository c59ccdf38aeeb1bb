//! Content-defined chunk boundaries.

use std::ops::Range;

/// No chunk is shorter than this, except the last chunk of a blob.
pub const MIN_CHUNK: usize = 16 * 1024;
/// The average chunk length the cut-point masks aim for.
pub const AVG_CHUNK: usize = 64 * 1024;
/// No chunk is longer than this.
pub const MAX_CHUNK: usize = 256 * 1024;

/// The chunks of `data`, as byte ranges covering it in order (FastCDC 2020, normalization
/// level 1, [`MIN_CHUNK`]/[`AVG_CHUNK`]/[`MAX_CHUNK`]). Empty data has no chunks.
///
/// The boundaries depend only on the bytes near them, so inserting bytes in the middle of a blob
/// leaves the chunks well before and well after the insertion unchanged. A streaming reader
/// (fastcdc's `StreamCDC` with the same three sizes) finds the same boundaries.
///
/// ```
/// let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
/// let ranges: Vec<_> = mesh_core::blob::chunk_boundaries(&data).collect();
/// assert_eq!(ranges.first().unwrap().start, 0);
/// assert_eq!(ranges.last().unwrap().end, data.len());
/// assert!(ranges.iter().all(|r| r.len() <= mesh_core::blob::MAX_CHUNK));
/// ```
pub fn chunk_boundaries(data: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| c.offset..c.offset + c.length)
}
