//! zstd content coding of sync bodies over HTTP (see `docs/protocol.md`, "Compression").
//!
//! The transport asks for zstd answers (`Accept-Encoding: zstd`) where they can be large
//! (pulls, feed listings, large pushes' acknowledgements), and compresses its own request
//! bodies only once the hub has said it takes them (`Accept-Encoding: zstd` on an answer):
//! an older hub never says so and keeps getting plain bodies. Answers are decoded with the
//! window limited to 8 MiB and the output to [`MAX_SYNC_ANSWER`].

use std::cell::Cell;
use std::io::Read;

use mesh_core::sync::Request;
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_ENCODING};

use crate::transport::TransportError;

/// The coding's name in headers.
pub(crate) const ZSTD: &str = "zstd";
/// Bodies shorter than this are sent as they are.
pub(crate) const COMPRESS_ABOVE: usize = 512;
/// The most bytes a decoded sync answer may have.
pub(crate) const MAX_SYNC_ANSWER: usize = 256 << 20;
/// The largest window (log2 bytes) an answer may ask for: 8 MiB, the coding's limit.
const WINDOW_LOG_MAX: u32 = 23;
const LEVEL: i32 = 3;
/// What `Content-Encoding: zstd` costs on the wire.
const HEADER_COST: usize = "content-encoding: zstd\r\n".len();
/// Pushes of fewer entries get short acknowledgements: not worth asking for compression.
const PUSH_ACK_WORTH: usize = 8;

/// Whether the answer to `request` may be long enough to be worth compressing.
pub(crate) fn answer_worth_compressing(request: &Request) -> bool {
    match request {
        Request::Feeds { .. } | Request::Pull { .. } => true,
        Request::Push { entries, .. } => entries.len() >= PUSH_ACK_WORTH,
    }
}

/// `json` compressed, when that saves more than the header costs.
pub(crate) fn compress(json: &[u8]) -> Option<Vec<u8>> {
    if json.len() < COMPRESS_ABOVE {
        return None;
    }
    compress_here(json)
        .ok()
        .filter(|z| z.len() + HEADER_COST < json.len())
}

/// The most memory the calling thread's compressor keeps between uses: one grown past it by
/// a large body (past about 16 KiB) is dropped.
const KEPT_COMPRESSOR: usize = 256 << 10;

thread_local! {
    /// Kept per thread: making a context costs more than compressing one entry's push with it
    /// (about 13 µs against 2 on the benchmark machine).
    static COMPRESSOR: Cell<Option<zstd::bulk::Compressor<'static>>> = const { Cell::new(None) };
}

/// `json` as one zstd frame, with the calling thread's compressor.
fn compress_here(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut compressor = match COMPRESSOR.try_with(Cell::take).ok().flatten() {
        Some(c) => c,
        None => zstd::bulk::Compressor::new(LEVEL)?,
    };
    let out = compressor.compress(json);
    if out.is_ok() && compressor.context_mut().sizeof() <= KEPT_COMPRESSOR {
        // (Nothing is kept on a thread that is ending.)
        let _ = COMPRESSOR.try_with(|c| c.set(Some(compressor)));
    }
    out
}

/// Whether the hub says it takes zstd request bodies.
pub(crate) fn hub_takes_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|c| {
            c.split(';')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case(ZSTD))
        })
}

/// The answer's body as JSON bytes: decoded when it came zstd-coded.
pub(crate) fn decode_answer(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, TransportError> {
    let coding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim());
    match coding {
        None | Some("") => Ok(body.to_vec()),
        Some(c) if c.eq_ignore_ascii_case("identity") => Ok(body.to_vec()),
        Some(c) if c.eq_ignore_ascii_case(ZSTD) => decode(body, MAX_SYNC_ANSWER),
        Some(other) => Err(TransportError::Protocol(format!(
            "the hub answered in content coding {other:?}, which was not asked for"
        ))),
    }
}

fn decode(body: &[u8], max: usize) -> Result<Vec<u8>, TransportError> {
    let bad = |e: std::io::Error| TransportError::Protocol(format!("zstd answer: {e}"));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(bad)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(bad)?;
    let mut out = Vec::new();
    decoder
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > max {
        return Err(TransportError::Protocol(format!(
            "the decoded answer is over {max} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn answers_decode_within_their_bound() {
        let json = br#"{"type":"changes","entries":[],"next":1,"more":false}"#.repeat(50);
        let z = compress(&json).expect("repetitive JSON compresses");
        let mut h = HeaderMap::new();
        assert_eq!(decode_answer(&h, &json).unwrap(), json);
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(decode_answer(&h, &z).unwrap(), json);
        assert!(decode(&z, json.len() - 1).is_err(), "over the bound");
        assert!(decode_answer(&h, b"garbage").is_err());
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(decode_answer(&h, &json).is_err());
        assert!(compress(b"{}").is_none(), "too short to pay");
    }

    #[test]
    fn the_kept_compressor_stays_small() {
        let small = br#"{"type":"push","entries":[]}"#.repeat(40);
        let z = compress(&small).expect("repetitive JSON compresses");
        assert_eq!(zstd::bulk::decompress(&z, small.len()).unwrap(), small);
        assert!(
            COMPRESSOR.with(|c| c.take()).is_some(),
            "kept for the next body"
        );
        // Large and incompressible: the context grows with it and is not kept.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..8 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(&big).is_none(), "random bytes do not compress");
        assert!(
            COMPRESSOR.with(|c| c.take()).is_none(),
            "a large context was kept"
        );
        // The next small body compresses the same as with a fresh context.
        assert_eq!(compress(&small), Some(z));
    }

    #[test]
    fn the_hub_s_offer_is_read_from_accept_encoding() {
        let mut h = HeaderMap::new();
        assert!(!hub_takes_zstd(&h));
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, ZSTD;q=1"));
        assert!(hub_takes_zstd(&h));
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!hub_takes_zstd(&h));
    }
}
