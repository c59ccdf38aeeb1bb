//! zstd content coding of sync bodies over HTTP (see `docs/protocol.md`, "Compression").
//!
//! The transport asks for zstd answers (`Accept-Encoding: zstd`) where they can be large
//! (pulls, feed listings, large pushes' acknowledgements), and compresses its own request
//! bodies only once the hub has said it takes them (`Accept-Encoding: zstd` on an answer):
//! an older hub never says so and keeps getting plain bodies. Answers are decoded with the
//! window limited to 8 MiB and the output to [`MAX_SYNC_ANSWER`].
//!
//! The notification stream asks for zstd too: the hub then codes each event as a frame of its
//! own, and [`StreamDecoder`] reads the frames as they come, in bounded steps.

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
        Request::PushEncoded { entries, .. } => entries.len() >= PUSH_ACK_WORTH,
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

/// Whether a body came zstd-coded, by its `Content-Encoding` (none, or `identity`: plain).
/// Any other coding was not asked for, and `what` (the answer, the stream) is refused.
pub(crate) fn zstd_coded(headers: &HeaderMap, what: &str) -> Result<bool, TransportError> {
    let coding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim());
    match coding {
        None | Some("") => Ok(false),
        Some(c) if c.eq_ignore_ascii_case("identity") => Ok(false),
        Some(c) if c.eq_ignore_ascii_case(ZSTD) => Ok(true),
        Some(other) => Err(TransportError::Protocol(format!(
            "{what} came in content coding {other:?}, which was not asked for"
        ))),
    }
}

/// The answer's body as JSON bytes: decoded when it came zstd-coded.
pub(crate) fn decode_answer(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, TransportError> {
    if zstd_coded(headers, "the hub's answer")? {
        decode(body, MAX_SYNC_ANSWER)
    } else {
        Ok(body.to_vec())
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

/// The most bytes one step of a [`StreamDecoder`] writes.
const STREAM_STEP: usize = 64 << 10;

/// Decodes a zstd-coded stream (the notification stream: one or more frames, each flushed by
/// the hub as it wrote it) in steps of at most [`STREAM_STEP`] bytes of output, so that the
/// caller can take what is complete and bound what it holds between steps: a few bytes that
/// would inflate to gigabytes never land in memory at once.
pub(crate) struct StreamDecoder {
    decoder: zstd::stream::raw::Decoder<'static>,
    /// Coded bytes received and not decoded yet, from `at` on.
    pending: Vec<u8>,
    at: usize,
    /// The last step filled its output: the decoder may hold more without new input.
    full: bool,
}

impl StreamDecoder {
    pub(crate) fn new() -> Result<StreamDecoder, TransportError> {
        let bad = |e: std::io::Error| TransportError::Protocol(format!("zstd stream: {e}"));
        let mut decoder = zstd::stream::raw::Decoder::new().map_err(bad)?;
        decoder
            .set_parameter(zstd::stream::raw::DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(bad)?;
        Ok(StreamDecoder {
            decoder,
            pending: Vec::new(),
            at: 0,
            full: false,
        })
    }

    /// Whether a [`step`](Self::step) can give more without new input.
    pub(crate) fn has_more(&self) -> bool {
        self.at < self.pending.len() || self.full
    }

    /// Takes the next coded bytes received.
    pub(crate) fn feed(&mut self, coded: &[u8]) {
        self.pending.drain(..self.at);
        self.at = 0;
        self.pending.extend_from_slice(coded);
    }

    /// Decodes what it can, up to [`STREAM_STEP`] bytes, onto the end of `out`.
    pub(crate) fn step(&mut self, out: &mut Vec<u8>) -> Result<(), TransportError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let start = out.len();
        out.resize(start + STREAM_STEP, 0);
        let mut input = InBuffer::around(&self.pending[self.at..]);
        let mut output = OutBuffer::around(&mut out[start..]);
        let run = self.decoder.run(&mut input, &mut output);
        let (used, made) = (input.pos(), output.pos());
        out.truncate(start + made);
        run.map_err(|e| TransportError::Protocol(format!("zstd stream: {e}")))?;
        self.at += used;
        self.full = made == STREAM_STEP;
        if used == 0 && made == 0 && self.at < self.pending.len() {
            return Err(TransportError::Protocol(
                "zstd stream: no progress on its input".into(),
            ));
        }
        Ok(())
    }
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

    /// Everything a decoder gives, one step at a time, with what it holds checked after each.
    fn decode_stream(coded: &[&[u8]], bound: usize) -> Result<Vec<u8>, TransportError> {
        let mut d = StreamDecoder::new()?;
        let mut out = Vec::new();
        for piece in coded {
            d.feed(piece);
            while d.has_more() {
                d.step(&mut out)?;
                if out.len() > bound {
                    return Err(TransportError::Protocol("over the bound".into()));
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn a_stream_of_frames_decodes_whatever_its_pieces() {
        let events: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("event: change\ndata: {{\"head\":{i}}}\n\n").repeat(i + 1))
            .map(String::into_bytes)
            .collect();
        let coded: Vec<u8> = events
            .iter()
            .flat_map(|e| zstd::bulk::compress(e, 3).unwrap())
            .collect();
        let plain = events.concat();
        // As whole frames, byte by byte, and in pieces that cut frames anywhere.
        let frames: Vec<Vec<u8>> = events
            .iter()
            .map(|e| zstd::bulk::compress(e, 3).unwrap())
            .collect();
        let whole: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(decode_stream(&whole, usize::MAX).unwrap(), plain);
        let bytes: Vec<&[u8]> = coded.chunks(1).collect();
        assert_eq!(decode_stream(&bytes, usize::MAX).unwrap(), plain);
        let cut: Vec<&[u8]> = coded.chunks(37).collect();
        assert_eq!(decode_stream(&cut, usize::MAX).unwrap(), plain);
        assert!(decode_stream(&[b"not zstd at all"], usize::MAX).is_err());
    }

    /// A few bytes that inflate to 64 MiB are decoded one step at a time: the caller sees
    /// them pass its bound after one step more, not after 64 MiB.
    #[test]
    fn a_stream_bomb_is_seen_one_step_at_a_time() {
        let bomb = zstd::bulk::compress(&vec![b'a'; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let mut d = StreamDecoder::new().unwrap();
        d.feed(&bomb);
        let mut out = Vec::new();
        let mut steps = 0;
        while d.has_more() && out.len() <= 1 << 20 {
            d.step(&mut out).unwrap();
            steps += 1;
            assert!(out.len() <= (1 << 20) + STREAM_STEP, "{} bytes", out.len());
        }
        assert!(d.has_more(), "the rest stays coded");
        assert!(steps <= (1 << 20) / STREAM_STEP + 2, "{steps} steps");
        // A frame asking for a window past 8 MiB is refused.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(27).unwrap();
        std::io::Write::write_all(&mut enc, b"tiny").unwrap();
        std::io::Write::flush(&mut enc).unwrap();
        let wide = enc.finish().unwrap();
        assert!(decode_stream(&[&wide], usize::MAX).is_err());
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
