//! zstd content coding of sync bodies: what the hub negotiates, the bound on what a
//! compressed body may inflate to, and the HTTP transport against hubs that do and do not take
//! compressed requests.

use mesh_client::transport::{HttpTransport, Transport};
use mesh_core::sync::{Request, Response};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::hubs::{fast, TestHub};

fn http() -> reqwest::Client {
    // No decoding of its own (the workspace's reqwest has no compression features): the
    // bytes seen here are the bytes on the wire.
    reqwest::Client::new()
}

/// A `feeds` request: its answer lists every feed of the user's folders.
fn listing() -> String {
    r#"{"type":"feeds","from":"probe"}"#.to_owned()
}

fn encoding(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_bodies_are_zstd_coded_both_ways_when_negotiated() {
    let hub = TestHub::memory().await;
    let token = hub.token("ann", "laptop");
    // Folders made through the REST API (written by the hub itself): a long `feeds` answer.
    for i in 0..20 {
        let r = http()
            .post(format!("{}/mesh/folders", hub.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"name":"folder {i}"}}"#))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let url = format!("{}/mesh/sync", hub.url);
    let post = |body: Vec<u8>| {
        http()
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };

    // A `feeds` answer says that zstd request bodies are taken.
    let r = post(br#"{"type":"feeds","from":"probe"}"#.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(encoding(&r, "accept-encoding").as_deref(), Some("zstd"));

    // The same listing, plain and compressed: the same JSON, fewer bytes.
    let plain = post(listing().into_bytes()).send().await.unwrap();
    assert_eq!(encoding(&plain, "content-encoding"), None);
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() > 2048, "{} bytes", plain.len());
    let coded = post(listing().into_bytes())
        .header("accept-encoding", "gzip, zstd;q=0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(coded.status(), 200);
    assert_eq!(
        encoding(&coded, "content-encoding").as_deref(),
        Some("zstd")
    );
    let coded = coded.bytes().await.unwrap();
    assert!(
        coded.len() < plain.len() * 3 / 4,
        "{} of {}",
        coded.len(),
        plain.len()
    );
    assert_eq!(zstd::decode_all(&coded[..]).unwrap(), plain);

    // Codings the hub does not produce, or refused ones, get plain answers.
    for accept in ["gzip", "br, gzip", "zstd;q=0"] {
        let r = post(listing().into_bytes())
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(encoding(&r, "content-encoding"), None, "{accept}");
        assert_eq!(r.bytes().await.unwrap(), plain, "{accept}");
    }

    // A compressed request is read like a plain one.
    let r = post(zstd::encode_all(listing().as_bytes(), 3).unwrap())
        .header("content-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), plain);

    // Any other coding is 415, naming the one taken.
    let r = post(listing().into_bytes())
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(encoding(&r, "accept-encoding").as_deref(), Some("zstd"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unsupported_media_type");

    // A body that says zstd and is not: 400, never a 5xx.
    let r = post(listing().into_bytes())
        .header("content-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_body_inflating_past_the_limit_is_refused_with_413() {
    let limit = 64 << 10;
    let hub = TestHub::start(mesh_hub::Hub::builder().max_body(limit).build().unwrap()).await;
    let token = hub.token("ann", "laptop");
    // 16 MiB of spaces (valid JSON whitespace) in a few kilobytes at most.
    let bomb = zstd::encode_all(&vec![b' '; 16 << 20][..], 1).unwrap();
    assert!(bomb.len() < 8 << 10, "{} bytes", bomb.len());
    let r = http()
        .post(format!("{}/mesh/sync", hub.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
    // The hub goes on serving.
    let t = hub.transport("ann", "phone");
    t.send(Request::Feeds {
        from: "probe".parse().unwrap(),
        only: None,
        certificates: false,
    })
    .await
    .unwrap();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_compressed_body_that_inflates_within_the_limit_is_taken() {
    // A few hundred bytes on the wire that decode to far more than the hub decodes on its
    // async threads (64 KiB), but less than its body limit: decoded off them, and answered.
    let hub = TestHub::start(mesh_hub::Hub::builder().max_body(1 << 20).build().unwrap()).await;
    let token = hub.token("ann", "laptop");
    let mut json = listing().into_bytes();
    json.splice(1..1, vec![b' '; 512 << 10]);
    let z = zstd::encode_all(&json[..], 3).unwrap();
    assert!(z.len() < 4 << 10, "{} bytes", z.len());
    let r = http()
        .post(format!("{}/mesh/sync", hub.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(z)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Response = r.json().await.unwrap();
    assert!(matches!(answer, Response::Feeds { .. }), "{answer:?}");
    hub.stop().await;
}

/// A `feeds` request long enough to be worth compressing.
fn long_feeds() -> Request {
    Request::Feeds {
        from: "device-1".parse().unwrap(),
        only: Some(
            (0..40)
                .map(|i| format!("folder:f{i}/notes").parse().unwrap())
                .collect(),
        ),
        certificates: false,
    }
}

const FEEDS_OK: &str = r#"{"type":"feeds","replica":"hub-1","feeds":[]}"#;

fn coded(requests: &[wiremock::Request]) -> Vec<bool> {
    requests
        .iter()
        .map(|r| {
            r.headers
                .get("content-encoding")
                .is_some_and(|v| v.as_bytes() == b"zstd")
        })
        .collect()
}

#[tokio::test]
async fn a_hub_that_does_not_offer_zstd_gets_plain_bodies() {
    // An older hub: it never names zstd in an answer, and would not read it.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/mesh/sync"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(FEEDS_OK, "application/json"))
        .mount(&server)
        .await;
    let t = HttpTransport::with_config(&server.uri(), "token", fast()).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            t.send(long_feeds()).await.unwrap(),
            Response::Feeds { .. }
        ));
    }
    let got = server.received_requests().await.unwrap();
    assert_eq!(coded(&got), [false, false, false]);
    for r in &got {
        serde_json::from_slice::<Request>(&r.body).expect("plain JSON");
    }
}

#[tokio::test]
async fn the_transport_compresses_once_offered_and_falls_back_when_refused() {
    let server = MockServer::start().await;
    // Offers zstd, but refuses a compressed body as an older hub would (as malformed JSON).
    Mock::given(method("POST"))
        .and(path("/mesh/sync"))
        .and(header("content-encoding", "zstd"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"code":"invalid_json","message":"expected value at line 1 column 1"}"#,
            "application/json",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    // Plain requests get a zstd-coded answer (the transport asked for it) and the offer.
    let answer = zstd::encode_all(FEEDS_OK.as_bytes(), 3).unwrap();
    Mock::given(method("POST"))
        .and(path("/mesh/sync"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("accept-encoding", "zstd")
                .insert_header("content-encoding", "zstd")
                .set_body_raw(answer, "application/json"),
        )
        .mount(&server)
        .await;
    let t = HttpTransport::with_config(&server.uri(), "token", fast()).unwrap();
    // The first request goes plain (nothing offered yet); the second compressed, refused,
    // and again plain: both succeed.
    for _ in 0..2 {
        assert!(matches!(
            t.send(long_feeds()).await.unwrap(),
            Response::Feeds { .. }
        ));
    }
    let got = server.received_requests().await.unwrap();
    assert_eq!(coded(&got), [false, true, false]);
    assert!(got.iter().all(|r| r
        .headers
        .get("accept-encoding")
        .is_some_and(|v| v.as_bytes() == b"zstd")));
    assert_eq!(
        zstd::decode_all(&got[1].body[..]).unwrap(),
        got[0].body,
        "the same request, compressed"
    );
}
