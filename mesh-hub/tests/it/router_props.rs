//! Random requests thrown at the router: whatever comes in, the answer is never a 5xx nor a
//! panic, and every error answer carries a JSON `{code, message}` body.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use mesh_core::blob::{pack, ChunkHash, Manifest};
use mesh_hub::{Hub, HubConfig};
use proptest::prelude::*;
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hub = Hub::builder()
        .config(HubConfig {
            max_body: 64 << 10,
            heartbeat: Duration::from_secs(3600),
            long_poll_max: Duration::from_millis(20),
            ..HubConfig::default()
        })
        .build()
        .unwrap();
    let ann = "ann".parse().unwrap();
    hub.accounts().add_user(&ann).unwrap();
    let token = hub
        .accounts()
        .add_device(&ann, &"laptop".parse().unwrap(), "l", "laptop")
        .unwrap();
    let router = hub.router();
    // A folder with a feed and an entry, so that valid paths reach deep handlers.
    rt.block_on(async {
        for (path, body) in [
            ("/mesh/folders", r#"{"name":"F","id":"f1@ann"}"#),
            ("/mesh/folders/f1@ann/feeds", r#"{"name":"todos"}"#),
            (
                "/mesh/folders/f1@ann/feeds/todos/entries",
                r#"{"id":"e1","title":"t"}"#,
            ),
        ] {
            let r = router
                .clone()
                .oneshot(
                    Request::post(path)
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
        // A blob of two chunks, so that object and blob paths reach deep handlers.
        let r = router
            .clone()
            .oneshot(
                Request::post("/mesh/folders/f1@ann/objects")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/x-mesh-pack")
                    .body(Body::from(blob_pack()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload: {}", r.status());
    });
    Fixture { rt, router, token }
}

/// A segment naming an object: the blob's manifest, a chunk, an unknown hash, or anything.
fn blob_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(manifest().hash().hex()),
        Just(ChunkHash::of(CHUNKS[0]).hex()),
        Just(ChunkHash::of(b"unknown").hex()),
        Just(manifest().hash().hex().to_uppercase()),
        segment(),
    ]
}

const CHUNKS: [&[u8]; 2] = [b"first chunk", b"second chunk"];

fn manifest() -> Manifest {
    Manifest::new(CHUNKS.map(|c| (ChunkHash::of(c), c.len() as u32))).unwrap()
}

fn blob_pack() -> Vec<u8> {
    let mut body = Vec::new();
    for c in CHUNKS {
        pack::write_frame(&mut body, &ChunkHash::of(c), c);
    }
    let m = manifest().encode();
    pack::write_frame(&mut body, &ChunkHash::of(&m), &m);
    body
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("mesh".to_owned()),
        Just("folders".to_owned()),
        Just("f1@ann".to_owned()),
        Just("feeds".to_owned()),
        Just("todos".to_owned()),
        Just("entries".to_owned()),
        Just("e1".to_owned()),
        Just("members".to_owned()),
        Just("ann".to_owned()),
        Just("mappings".to_owned()),
        Just("laptop".to_owned()),
        Just("news".to_owned()),
        Just("changes".to_owned()),
        Just("devices".to_owned()),
        Just("invitations".to_owned()),
        Just("accept".to_owned()),
        Just("sync".to_owned()),
        Just("notifications".to_owned()),
        Just("objects".to_owned()),
        Just("missing".to_owned()),
        Just("fetch".to_owned()),
        Just("blobs".to_owned()),
        Just(manifest().hash().hex()),
        Just(ChunkHash::of(CHUNKS[0]).hex()),
        Just(ChunkHash::of(b"unknown").hex()),
        Just("".to_owned()),
        Just("..".to_owned()),
        Just("%FF".to_owned()),
        Just("%2F".to_owned()),
        Just("%00".to_owned()),
        "[a-z0-9._~-]{1,12}",
        "x{300}",
    ]
}

/// Paths: random segments, or the blob resources of a folder (which random segments would
/// seldom spell out).
fn path() -> impl Strategy<Value = Vec<String>> {
    let blob = (
        prop_oneof![
            Just("f1@ann".to_owned()),
            Just("nope".to_owned()),
            segment()
        ],
        prop_oneof![
            Just(vec!["objects".to_owned()]),
            Just(vec!["objects".to_owned(), "missing".to_owned()]),
            Just(vec!["objects".to_owned(), "fetch".to_owned()]),
            segment().prop_map(|s| vec!["objects".to_owned(), s]),
            segment().prop_map(|s| vec!["blobs".to_owned(), s]),
        ],
    )
        .prop_map(|(folder, tail)| {
            let mut p = vec!["mesh".to_owned(), "folders".to_owned(), folder];
            p.extend(tail);
            p
        });
    prop_oneof![proptest::collection::vec(segment(), 0..8), blob]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("?$filter=title%20eq%20'x'".to_owned()),
        Just("?$filter=((((".to_owned()),
        Just("?$orderby=updated%20desc&$top=2&$skip=1".to_owned()),
        Just("?$top=99999999999999999999".to_owned()),
        Just("?cursor=zz-00".to_owned()),
        Just("?cursor=1-000000000000&limit=5".to_owned()),
        Just("?wait=0".to_owned()),
        Just("?wait=abc".to_owned()),
        Just("?limit=-1".to_owned()),
        Just("?%ZZ=%ZZ&&==".to_owned()),
        "\\?[ -~]{0,40}".prop_map(|s| s.replace([' ', '#'], "")),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(br#"{"type":"feeds","from":"r1"}"#.to_vec()),
        Just(br#"{"type":"pull","from":"r1","feed":{"scope":{"folder":"f1@ann"},"name":"todos"},"since":0,"limit":5}"#.to_vec()),
        Just(br#"{"type":"push","from":"r1","feed":{"scope":{"folder":"f1@ann"},"name":"todos"},"entries":[{}]}"#.to_vec()),
        Just(br#"{"name":"n","id":"f2"}"#.to_vec()),
        Just(br#"{"user":"ann","role":"owner"}"#.to_vec()),
        Just(br#"{"title":"t","content":{"a":[1,2]}}"#.to_vec()),
        Just(br#"{"role":"superuser"}"#.to_vec()),
        Just(b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><title>x</title></entry></feed>".to_vec()),
        Just(b"<<<<".to_vec()),
        Just(vec![b'{'; 70_000]),
        Just(blob_pack()),
        Just(blob_pack()[..50].to_vec()),
        Just(pack::encode_hashes(&[manifest().hash(), ChunkHash::of(CHUNKS[1])])),
        proptest::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,200}".prop_map(String::into_bytes),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
        Just(Method::HEAD),
    ]
}

/// One request through the router: never a 5xx nor a panic; error answers carry JSON
/// `{code, message}`.
#[allow(clippy::too_many_arguments)]
fn check(
    fx: &Fixture,
    m: Method,
    uri: String,
    b: Vec<u8>,
    auth: u8,
    ct: Option<&str>,
    accept: Option<&str>,
    extra: Vec<(&'static str, String)>,
) -> Result<(), TestCaseError> {
    let mut rb = Request::builder().method(m.clone()).uri(uri.as_str());
    match auth {
        0 => {}
        1 => rb = rb.header("authorization", format!("Bearer {}", fx.token)),
        _ => rb = rb.header("authorization", "Bearer mesh_forged"),
    }
    if let Some(ct) = ct {
        rb = rb.header("content-type", ct);
    }
    if let Some(a) = accept {
        rb = rb.header("accept", a);
    }
    for (name, value) in &extra {
        rb = rb.header(*name, value.as_str());
    }
    let Ok(req) = rb.body(Body::from(b)) else {
        // Not a representable HTTP request (the URI did not parse): nothing to send.
        return Ok(());
    };
    let (status, ctype, bytes) = fx.rt.block_on(async {
        let resp = tokio::time::timeout(Duration::from_secs(10), fx.router.clone().oneshot(req))
            .await
            .expect("answers promptly")
            .expect("infallible");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = if ctype.starts_with("text/event-stream") {
            Default::default()
        } else {
            axum::body::to_bytes(resp.into_body(), 16 << 20)
                .await
                .unwrap()
        };
        (status, ctype, bytes)
    });
    prop_assert!(
        status.as_u16() < 500,
        "{m} {uri}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    if status.as_u16() >= 400 && m != Method::HEAD {
        prop_assert!(
            ctype.starts_with("application/json"),
            "{m} {uri}: {status} {ctype}"
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{m} {uri}: {e}")))?;
        prop_assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
    }
    Ok(())
}

thread_local! {
    static FIX: Fixture = fixture();
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("application/atom+xml")),
        Just(Some("text/plain")),
        Just(Some("application/json; charset=\u{7f}")),
        Just(Some("application/x-mesh-pack")),
        Just(Some("application/x-mesh-hashes")),
    ]
}

fn range() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("bytes=0-5".to_owned())),
        Just(Some("bytes=-3".to_owned())),
        Just(Some("bytes=5-".to_owned())),
        Just(Some("bytes=99999999999999999999999-".to_owned())),
        Just(Some("bytes=-99999999999999999999999".to_owned())),
        Just(Some("bytes=7-2".to_owned())),
        Just(Some("bytes=0-0,2-3".to_owned())),
        "bytes=[0-9-]{0,12}".prop_map(Some),
        "[ -~]{0,24}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_get_a_5xx(
        m in method(),
        segs in path(),
        q in query(),
        b in body(),
        auth in 0u8..3,
        ct in content_type(),
        range in range(),
        accept in prop_oneof![
            Just(None),
            Just(Some("application/atom+xml")),
            Just(Some("text/event-stream")),
            Just(Some("*/*")),
        ],
    ) {
        let uri = format!("/{}{}", segs.join("/"), q);
        let extra = range.map(|r| ("range", r)).into_iter().collect();
        FIX.with(|fx| check(fx, m, uri, b, auth, ct, accept, extra))?;
    }

    /// The blob resources, reached with a valid token: every hash and range.
    #[test]
    fn random_blob_requests_never_get_a_5xx(
        m in prop_oneof![Just(Method::GET), Just(Method::HEAD), Just(Method::POST)],
        folder in prop_oneof![3 => Just("f1@ann".to_owned()), 1 => Just("nope".to_owned()), 1 => segment()],
        tail in prop_oneof![
            Just("objects".to_owned()),
            Just("objects/missing".to_owned()),
            Just("objects/fetch".to_owned()),
            blob_segment().prop_map(|s| format!("objects/{s}")),
            blob_segment().prop_map(|s| format!("blobs/{s}")),
        ],
        b in body(),
        ct in content_type(),
        range in range(),
        if_none_match in prop_oneof![Just(None), Just(Some(format!("\"{}\"", manifest().hash().hex()))), Just(Some("*".to_owned()))],
    ) {
        let uri = format!("/mesh/folders/{folder}/{tail}");
        let extra = range
            .map(|r| ("range", r))
            .into_iter()
            .chain(if_none_match.map(|t| ("if-none-match", t)))
            .collect();
        FIX.with(|fx| check(fx, m, uri, b, 1, ct, None, extra))?;
    }
}
