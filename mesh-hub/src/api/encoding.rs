//! Content codings of sync bodies (`POST /mesh/sync`) and of notifications: `zstd`,
//! negotiated.
//!
//! * A request body may come `Content-Encoding: zstd`. It is decoded with the window limited
//!   to 8 MiB (the limit of the `zstd` HTTP content coding) and its output to the hub's body
//!   limit: a small body that inflates past it is refused `413 payload_too_large` after reading
//!   at most one byte more than the limit, one that does not decode `400 bad_request`, and any
//!   other coding `415 unsupported_media_type` with `Accept-Encoding: zstd`.
//! * An answer is compressed when the request's `Accept-Encoding` names `zstd` (with a
//!   non-zero `q`), it is at least [`COMPRESS_ABOVE`] bytes and compression saves more than the
//!   header line costs.
//! * Answers to `feeds` requests carry `Accept-Encoding: zstd`: that is how a client learns it
//!   may compress its requests (an older hub never says so, and gets plain bodies).
//!
//! * A notification stream that carries changes (`?changes=1`, server-sent events) is coded
//!   when its request's `Accept-Encoding` takes zstd: each event (and each heartbeat) is a
//!   zstd frame of its own, flushed as it is written ([`stream_frames`]). A coded content may
//!   be several frames (RFC 8878 §3.1), so any zstd decoder reads the stream as one. No
//!   context is kept per stream between events: a stream-wide window would compress better
//!   across events, but would keep encoder state for every open stream (3.5 MiB with level
//!   3's default streaming parameters), and a hub holds one stream per connected device. A
//!   long-poll answer is coded as a sync answer is.
//!
//! Blob and object routes never take part: their bodies are chunks of files, mostly compressed
//! already.

use std::io::Read;

mod contexts;

use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The one content coding the hub speaks besides `identity`.
pub(crate) const ZSTD: &str = "zstd";
/// Answers shorter than this go as they are: the frame and the header line would eat most of
/// what compressing saves.
pub(crate) const COMPRESS_ABOVE: usize = 512;
/// The largest window (log2 bytes) a compressed body may ask for: 8 MiB.
const WINDOW_LOG_MAX: u32 = 23;
/// zstd's default level: fast, and most of the gain on JSON.
const LEVEL: i32 = 3;
/// What `Content-Encoding: zstd` costs on the wire.
const HEADER_COST: usize = "content-encoding: zstd\r\n".len();

/// A request body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// As it is.
    Identity,
    /// A zstd frame (or several).
    Zstd,
}

/// The request's content coding; any other than `identity` and `zstd` is refused with `415`
/// and `Accept-Encoding: zstd`.
pub(crate) fn request_coding(headers: &HeaderMap) -> Result<Coding, Box<Response>> {
    let mut coding = Coding::Identity;
    for value in headers.get_all(CONTENT_ENCODING) {
        for c in value.to_str().unwrap_or("?").split(',') {
            match c.trim() {
                "" => {}
                c if c.eq_ignore_ascii_case("identity") => {}
                c if c.eq_ignore_ascii_case(ZSTD) && coding == Coding::Identity => {
                    coding = Coding::Zstd;
                }
                other => {
                    let mut r = ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        format!("content coding {other:?} is not accepted; zstd is"),
                    )
                    .into_response();
                    r.headers_mut()
                        .insert(ACCEPT_ENCODING, HeaderValue::from_static(ZSTD));
                    return Err(Box::new(r));
                }
            }
        }
    }
    Ok(coding)
}

/// Decodes a zstd body of at most `max` bytes once decoded.
pub(crate) fn decode(body: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    decode_within(body, max)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the decoded body is over the hub's limit of {max} bytes"),
        )
    })
}

/// Decodes a zstd body, or `None` as soon as it gives more than `limit` bytes (having
/// decoded at most one byte more).
pub(crate) fn decode_within(body: &[u8], limit: usize) -> Result<Option<Vec<u8>>, ApiError> {
    let bad = |e: std::io::Error| {
        ApiError::bad_request(format!("the zstd request body does not decode: {e}"))
    };
    let out = contexts::decoding(|ctx| {
        let mut decoder = zstd::stream::read::Decoder::with_context(body, ctx);
        decoder.window_log_max(WINDOW_LOG_MAX)?;
        let mut out = Vec::new();
        decoder.take(limit as u64 + 1).read_to_end(&mut out)?;
        Ok(out)
    })
    .map_err(bad)?;
    Ok((out.len() <= limit).then_some(out))
}

/// Whether the request's `Accept-Encoding` takes zstd (`zstd` with no `q`, or a `q` above 0).
pub(crate) fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                })
                .next()
                .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
            coding.eq_ignore_ascii_case(ZSTD) && q > 0.0
        })
}

/// `body` compressed when `accepted`, long enough, and smaller by more than the header line.
pub(crate) fn compress(body: Vec<u8>, accepted: bool) -> (Vec<u8>, Coding) {
    if !accepted || body.len() < COMPRESS_ABOVE {
        return (body, Coding::Identity);
    }
    match contexts::compress(&body) {
        Ok(z) if z.len() + HEADER_COST < body.len() => (z, Coding::Zstd),
        _ => (body, Coding::Identity),
    }
}

/// `response`'s body (a stream) coded as one zstd frame per piece, each flushed as it comes:
/// for server-sent events, whose pieces are whole events. Headers say so
/// (`Content-Encoding: zstd`, `Vary: Accept-Encoding`).
pub(crate) fn stream_frames(response: Response) -> Response {
    use futures::StreamExt;
    let (mut parts, body) = response.into_parts();
    let frames = body.into_data_stream().map(|piece| {
        let piece = piece?;
        contexts::compress(&piece)
            .map(axum::body::Bytes::from)
            .map_err(axum::Error::new)
    });
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(ZSTD));
    parts
        .headers
        .insert(VARY, HeaderValue::from_static("accept-encoding"));
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from_stream(frames))
}

/// An answer whose headers leave now and whose body follows once `make` has made it on a
/// blocking thread: coded as one zstd frame when `zstd` (however much that saves: the coding
/// is said before the body exists; a frame of bytes that do not compress costs a few bytes
/// per 128 KiB block), as it is otherwise.
///
/// A pull's page that has more after it goes so: its `Mesh-Next` header tells the device where
/// the next page starts while this one is still being encoded and compressed, so that the
/// next page is read from the store meanwhile (see `docs/protocol.md`, "Asking ahead"). The
/// body is sent chunked. Should `make` fail, the body ends in an error: the connection is
/// cut before the chunked body's end, and the client sees a truncated answer.
pub(crate) fn answer_later<E>(
    zstd: bool,
    make: impl FnOnce() -> Result<Vec<u8>, E> + Send + 'static,
) -> Response
where
    E: std::error::Error + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let body = make()
            .map_err(axum::Error::new)
            .and_then(|json| match zstd {
                true => contexts::compress(&json).map_err(axum::Error::new),
                false => Ok(json),
            });
        // The client may be gone: then nobody waits for the body.
        let _ = tx.send(body);
    });
    let body = futures::stream::once(async move {
        rx.await
            .map_err(axum::Error::new)
            .and_then(|made| made.map(axum::body::Bytes::from))
    });
    let mut answer = crate::api::json_bytes(StatusCode::OK, Vec::new());
    *answer.body_mut() = axum::body::Body::from_stream(body);
    if zstd {
        mark(&mut answer, Coding::Zstd);
    }
    answer
}

/// Marks an answer as zstd-coded when it is.
pub(crate) fn mark(response: &mut Response, coding: Coding) {
    if coding == Coding::Zstd {
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static(ZSTD));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: axum::http::HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    /// Serves `answer` (called once per request) on 127.0.0.1 through the hub's own server.
    async fn serve_one(
        answer: impl Fn() -> Response + Clone + Send + Sync + 'static,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        use crate::server::listener::{serve, Shared};
        let app = axum::Router::new().route(
            "/page",
            axum::routing::get(move || {
                let answer = answer.clone();
                async move { answer() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            app,
            limits: crate::server::ConnectionLimits::default(),
            max_body: 1 << 20,
            tls: None,
            observer: crate::ops::Observer::new(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, shared, async move {
            let _ = stopped.await;
        }));
        (base, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_answer_sends_its_headers_before_its_body_is_made() {
        let json = br#"{"type":"changes","entries":[]}"#.repeat(100);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
        let made = json.clone();
        let (base, _stop) = serve_one(move || {
            let (wait, made) = (wait.clone(), made.clone());
            let mut answer = answer_later(true, move || {
                // Made only once the client has the headers.
                wait.lock().unwrap().recv().map(|()| made)
            });
            answer
                .headers_mut()
                .insert("mesh-next", HeaderValue::from(7));
            answer
        })
        .await;
        let client = reqwest::Client::new();
        let asked = client.get(format!("{base}/page")).send();
        let head = tokio::time::timeout(std::time::Duration::from_secs(20), asked)
            .await
            .expect("the headers came before the body was made")
            .unwrap();
        assert_eq!(head.headers()["mesh-next"], "7");
        assert_eq!(head.headers()[CONTENT_ENCODING], ZSTD);
        assert!(head.headers().get(CONTENT_LENGTH).is_none());
        release.send(()).unwrap();
        let body = head.bytes().await.unwrap();
        assert_eq!(zstd::decode_all(&body[..]).unwrap(), json);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_answer_that_fails_is_cut_short() {
        let (base, _stop) = serve_one(|| {
            answer_later(false, || {
                Err(std::io::Error::other("the page failed to encode"))
            })
        })
        .await;
        let head = reqwest::get(format!("{base}/page")).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head.headers().get(CONTENT_ENCODING).is_none());
        assert!(
            head.bytes().await.is_err(),
            "a failed body never reads as whole"
        );
        // A plain answer made later reads whole.
        let (base, _stop) =
            serve_one(|| answer_later(false, || Ok::<_, std::io::Error>(b"{}".to_vec()))).await;
        let body = reqwest::get(format!("{base}/page")).await.unwrap();
        assert!(body.headers().get(CONTENT_ENCODING).is_none());
        assert_eq!(&body.bytes().await.unwrap()[..], b"{}");
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        for (v, yes) in [
            ("zstd", true),
            ("gzip, ZSTD;q=0.5", true),
            ("gzip, br", false),
            ("zstd;q=0", false),
            ("zstd; q=0.0", false),
            ("zstdx", false),
            ("zstd;q=oops", false),
        ] {
            assert_eq!(accepts_zstd(&headers(ACCEPT_ENCODING, v)), yes, "{v}");
        }
        assert!(!accepts_zstd(&HeaderMap::new()));
    }

    #[test]
    fn only_zstd_and_identity_bodies_are_taken() {
        let ok = |v| request_coding(&headers(CONTENT_ENCODING, v)).ok();
        assert_eq!(ok("zstd"), Some(Coding::Zstd));
        assert_eq!(ok("identity"), Some(Coding::Identity));
        assert_eq!(
            request_coding(&HeaderMap::new()).ok(),
            Some(Coding::Identity)
        );
        for v in ["gzip", "zstd, zstd", "br", "zstd, gzip"] {
            let r = request_coding(&headers(CONTENT_ENCODING, v)).unwrap_err();
            assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
            assert_eq!(r.headers()[ACCEPT_ENCODING], "zstd");
        }
    }

    #[test]
    fn a_body_inflating_past_the_limit_is_refused() {
        let big = vec![b'a'; 1 << 20];
        let z = zstd::bulk::compress(&big, 3).unwrap();
        assert!(z.len() < 1 << 10);
        assert_eq!(decode(&z, 1 << 20).unwrap(), big);
        let e = decode(&z, (1 << 20) - 1).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
        let e = decode(b"not zstd at all", 1 << 20).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // A frame asking for a 128 MiB window is refused before the window is allocated.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(27).unwrap();
        std::io::Write::write_all(&mut enc, b"tiny").unwrap();
        // Flushed before the end, so that the frame does not declare its (tiny) size.
        std::io::Write::flush(&mut enc).unwrap();
        let wide = enc.finish().unwrap();
        let e = decode(&wide, 1 << 20).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
    }

    #[test]
    fn decoding_within_a_limit_stops_past_it() {
        let big = vec![b'a'; 1 << 20];
        let z = zstd::bulk::compress(&big, 3).unwrap();
        assert_eq!(decode_within(&z, 1 << 20).unwrap(), Some(big));
        assert_eq!(decode_within(&z, 4096).unwrap(), None);
        assert_eq!(
            decode_within(b"not zstd at all", 4096).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn only_what_pays_is_compressed() {
        let json = br#"{"type":"changes","entries":[]}"#.repeat(40);
        let (z, c) = compress(json.clone(), true);
        assert_eq!(c, Coding::Zstd);
        assert_eq!(zstd::bulk::decompress(&z, json.len()).unwrap(), json);
        assert_eq!(compress(json.clone(), false).1, Coding::Identity);
        assert_eq!(compress(json[..100].to_vec(), true).1, Coding::Identity);
        let mut rng = fastrand::Rng::with_seed(7);
        let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        assert_eq!(compress(noise, true).1, Coding::Identity);
    }
}
