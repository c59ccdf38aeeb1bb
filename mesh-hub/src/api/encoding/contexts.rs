//! zstd contexts kept per thread: making one costs more than compressing or decoding a small
//! sync body with it (about 13 µs against 2 to compress one entry's push, 9 against 1 to
//! decode it, on the benchmark machine).
//!
//! A context grows to the largest input or window it has served and keeps that memory; one
//! that grew past [`KEPT`] (a large body, or a frame asking for a large window) is dropped
//! after use instead of kept, so a thread never holds more than that for the next request.
//! A decoding context is reset before each use, so that a body that failed half-way leaves
//! nothing behind for the next one.

use std::cell::Cell;
use std::io;

use zstd::bulk::Compressor;
use zstd::zstd_safe::{DCtx, ResetDirective};

/// The most memory a thread keeps in one context between uses: enough for the contexts of
/// small bodies (one entry's push: about 55 KB to compress, 100 KB to decode; a 64 KiB body
/// decodes in 220 KB), not for those of large pages (a 700 KB page: 1.3 MB to compress,
/// 0.9 MB to decode), which are made afresh each time: that costs little beside their work.
const KEPT: usize = 256 << 10;

thread_local! {
    static COMPRESSOR: Cell<Option<Compressor<'static>>> = const { Cell::new(None) };
    static DECOMPRESSOR: Cell<Option<DCtx<'static>>> = const { Cell::new(None) };
}

/// `data` compressed at the hub's level ([`super::LEVEL`]) as one zstd frame, with this
/// thread's context.
pub(crate) fn compress(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut compressor = match COMPRESSOR.try_with(Cell::take).ok().flatten() {
        Some(c) => c,
        None => Compressor::new(super::LEVEL)?,
    };
    let out = compressor.compress(data);
    if out.is_ok() && compressor.context_mut().sizeof() <= KEPT {
        // (Nothing is kept on a thread that is ending.)
        let _ = COMPRESSOR.try_with(|c| c.set(Some(compressor)));
    }
    out
}

/// Runs `decode` with this thread's decoding context, reset first; the context is kept for
/// the next use only when `decode` succeeded and it stayed small.
pub(crate) fn decoding<T>(
    decode: impl FnOnce(&mut DCtx<'static>) -> io::Result<T>,
) -> io::Result<T> {
    let mut ctx = match DECOMPRESSOR.try_with(Cell::take).ok().flatten() {
        Some(c) => c,
        None => DCtx::try_create().ok_or_else(|| io::Error::other("no zstd context"))?,
    };
    ctx.reset(ResetDirective::SessionAndParameters)
        .map_err(|code| io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
    let out = decode(&mut ctx);
    if out.is_ok() && ctx.sizeof() <= KEPT {
        let _ = DECOMPRESSOR.try_with(|c| c.set(Some(ctx)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decode(body: &[u8], limit: u64) -> io::Result<Vec<u8>> {
        decoding(|ctx| {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::with_context(body, ctx)
                .take(limit)
                .read_to_end(&mut out)?;
            Ok(out)
        })
    }

    #[test]
    fn a_kept_context_serves_the_next_body_whatever_the_last_one_did() {
        let one = br#"{"type":"push","entries":[1,2,3]}"#.repeat(40);
        let two = br#"{"type":"pull","since":17}"#.repeat(40);
        let (z1, z2) = (compress(&one).unwrap(), compress(&two).unwrap());
        assert_eq!(zstd::bulk::decompress(&z1, one.len()).unwrap(), one);
        assert_eq!(decode(&z1, 1 << 20).unwrap(), one);
        // Cut off half-way: the context stops in the middle of a frame.
        assert!(decode(&z1[..z1.len() / 2], 1 << 20).is_err());
        // Stopped by the limit in the middle of a frame (a success for the caller).
        assert_eq!(decode(&z1, 10).unwrap(), &one[..10]);
        // Garbage.
        assert!(decode(b"not zstd at all", 1 << 20).is_err());
        // The next body decodes whole, on the same thread, after each of those.
        assert_eq!(decode(&z2, 1 << 20).unwrap(), two);
        assert_eq!(decode(&z1, 1 << 20).unwrap(), one);
    }

    #[test]
    fn a_context_grown_large_is_not_kept() {
        // Incompressible and large: the compressing context grows with it.
        let mut big = vec![0u8; 8 << 20];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut big {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let z = compress(&big).unwrap();
        assert!(
            COMPRESSOR.with(|c| c.take()).is_none(),
            "a large context was kept"
        );
        assert_eq!(decode(&z, 16 << 20).unwrap().len(), big.len());
        assert!(
            DECOMPRESSOR.with(|c| c.take()).is_none(),
            "a large context was kept"
        );
        // Small ones are.
        let small = b"0123456789".repeat(100);
        let z = compress(&small).unwrap();
        assert!(COMPRESSOR.with(|c| c.take()).is_some());
        assert_eq!(decode(&z, 1 << 20).unwrap(), small);
        assert!(DECOMPRESSOR.with(|c| c.take()).is_some());
    }
}
