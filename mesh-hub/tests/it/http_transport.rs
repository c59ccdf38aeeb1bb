//! `HttpTransport`: the shared conformance suite against a real hub on loopback, and its edge
//! cases against wiremock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_client::transport::{HttpConfig, HttpTransport, Transport, TransportError};
use mesh_core::blob::{pack, ChunkHash};
use mesh_core::sync::{Request, Response};
use mesh_core::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::hubs::{fast, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_transport_passes_the_suite_against_a_real_hub() {
    let hub = TestHub::memory().await;
    let n = AtomicUsize::new(0);
    crate::transport_suite::suite(|user| {
        let device = format!("{user}-device-{}", n.fetch_add(1, Ordering::SeqCst));
        Arc::new(hub.transport(user, &device))
    })
    .await;
    hub.stop().await;
}

fn feeds() -> Request {
    Request::Feeds {
        from: "device-1".parse().unwrap(),
        only: None,
        certificates: false,
    }
}

const FEEDS_OK: &str = r#"{"type":"feeds","replica":"hub-1","feeds":[]}"#;

fn transport(server: &MockServer, config: HttpConfig) -> HttpTransport {
    HttpTransport::with_config(&server.uri(), "token", config).unwrap()
}

async fn answer(status: u16, body: &str) -> (MockServer, HttpTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/mesh/sync"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    (server, t)
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_typed_and_not_retried() {
    let (server, t) = answer(401, r#"{"code":"unauthorized","message":"no"}"#).await;
    assert_eq!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::Unauthorized
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    let (server, t) = answer(
        403,
        r#"{"code":"permission_denied","message":"readers read"}"#,
    )
    .await;
    assert_eq!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::Forbidden("readers read".into())
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn precondition_failed_and_other_4xx_are_typed_and_not_retried() {
    let (server, t) = answer(412, r#"{"code":"precondition_failed","message":"etag"}"#).await;
    assert!(matches!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::PreconditionFailed(m) if m == "etag"
    ));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    let (server, t) = answer(404, r#"{"code":"not_found","message":"feed x"}"#).await;
    match t.send(feeds()).await.unwrap_err() {
        TransportError::Remote(e) => assert_eq!(e.code(), ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // A 4xx without the JSON error body is still a typed error, not a panic.
    let (server, t) = answer(400, "<html>bad</html>").await;
    assert!(matches!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::Protocol(_)
    ));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(FEEDS_OK, "application/json"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    let started = Instant::now();
    assert!(matches!(
        t.send(feeds()).await.unwrap(),
        Response::Feeds { .. }
    ));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn too_many_requests_beyond_the_limit_is_handed_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    assert_eq!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::RateLimited {
            retry_after: Some(Duration::from_secs(3600))
        }
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(FEEDS_OK, "application/json"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    assert!(t.send(feeds()).await.is_ok());
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    // Past the retry budget the last failure is returned.
    let (server, t) = answer(500, r#"{"code":"internal","message":"boom"}"#).await;
    assert!(matches!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::Server(_)
    ));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_protocol_errors() {
    for body in [
        "not json",
        r#"{"type":"feeds","repl"#,
        r#"{"type":"nonsense"}"#,
        "",
    ] {
        let (_server, t) = answer(200, body).await;
        assert!(
            matches!(
                t.send(feeds()).await.unwrap_err(),
                TransportError::Protocol(_)
            ),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_a_protocol_error() {
    // A server that promises 1000 bytes, sends 20 and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 64 << 10];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"type\":\"feeds\",\"re",
                )
                .await;
            let _ = sock.shutdown().await;
        }
    });
    let t = HttpTransport::with_config(&format!("http://{addr}"), "t", fast()).unwrap();
    match t.send(feeds()).await.unwrap_err() {
        TransportError::Protocol(m) => assert!(m.contains("truncated"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_slow_response_hits_the_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(FEEDS_OK, "application/json")
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let t = transport(&server, fast().with_timeout(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(t.send(feeds()).await.unwrap_err(), TransportError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_unreachable_hub_is_offline_after_the_retries() {
    // Bind, then close: nothing listens on the port.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let t = HttpTransport::with_config(&format!("http://{addr}"), "t", fast()).unwrap();
    assert!(matches!(
        t.send(feeds()).await.unwrap_err(),
        TransportError::Offline(_)
    ));
    assert!(matches!(
        t.watch().await.err(),
        Some(TransportError::Offline(_))
    ));
}

#[tokio::test]
async fn the_watch_stream_reads_server_sent_events() {
    use futures::StreamExt;
    let server = MockServer::start().await;
    let body = concat!(
        ": heartbeat\n\n",
        "event: change\nid: 5-abc\ndata: {\"feed\":{\"scope\":{\"mesh\":\"ann\"},\"name\":\"devices\"},\"head\":5}\n\n",
        "event: other\ndata: ignored\n\n",
        "event: change\ndata: not json\n\n",
        "event: revoked\ndata: {}\n\n",
        "event: change\ndata: {\"feed\":{\"scope\":{\"mesh\":\"ann\"},\"name\":\"devices\"},\"head\":6}\n\n",
    );
    Mock::given(method("GET"))
        .and(path("/mesh/notifications"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    let got: Vec<_> = t.watch().await.unwrap().collect().await;
    // One change; the revocation ends the stream before the second.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].head.0, 5);
    // The next watch resumes from the last event id.
    let _ = t.watch().await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(
        reqs[1]
            .headers
            .get("last-event-id")
            .unwrap()
            .to_str()
            .unwrap(),
        "5-abc"
    );

    let (_server, t) = answer(401, r#"{"code":"unauthorized","message":""}"#).await;
    let server2 = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server2)
        .await;
    let t2 = transport(&server2, fast());
    assert_eq!(t2.watch().await.err(), Some(TransportError::Unauthorized));
    drop(t);
}

/// A mock hub whose notification stream is `body` in content coding `coding`, served only to
/// requests that take zstd.
async fn coded_stream(body: Vec<u8>, coding: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/mesh/notifications"))
        .and(wiremock::matchers::header("accept-encoding", "zstd"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", coding)
                .set_body_raw(body, "text/event-stream"),
        )
        .mount(&server)
        .await;
    server
}

/// A zstd-coded stream (what the hub sends a client that takes zstd: a frame per event) reads
/// as the plain one, however its frames fall; a coded stream that inflates past what an
/// event may be ends without being held whole; a coding that was not asked for is refused.
#[tokio::test]
async fn the_watch_stream_reads_zstd_coded_events() {
    use futures::StreamExt;
    let event = |head: u32| {
        format!(
            "event: change\nid: {head}-abc\ndata: {{\"feed\":{{\"scope\":{{\"mesh\":\"ann\"}},\"name\":\"devices\"}},\"head\":{head}}}\n\n"
        )
    };
    let frame = |text: &str| zstd::bulk::compress(text.as_bytes(), 3).unwrap();
    let second = event(6);
    let (a, b) = second.split_at(20);
    let body = [
        frame(": heartbeat\n\n"),
        frame(&event(5)),
        // One event in two frames, and two events in one.
        frame(a),
        frame(b),
        frame(&(event(7) + &event(8))),
    ]
    .concat();
    let server = coded_stream(body, "zstd").await;
    let t = transport(&server, fast());
    let heads: Vec<u64> = t.watch().await.unwrap().map(|n| n.head.0).collect().await;
    assert_eq!(heads, [5, 6, 7, 8]);

    // A 64 MiB event of junk, then a good one: the stream ends at the bound instead of
    // holding the junk whole.
    let mut junk = vec![b'a'; 64 << 20];
    junk.extend_from_slice(b"\n\n");
    let bomb = [zstd::bulk::compress(&junk, 19).unwrap(), frame(&event(9))].concat();
    assert!(bomb.len() < 64 << 10);
    let server = coded_stream(bomb, "zstd").await;
    let t = transport(&server, fast());
    let got: Vec<_> = t.watch().await.unwrap().collect().await;
    assert!(got.is_empty(), "{got:?}");

    let server = coded_stream(event(5).into_bytes(), "gzip").await;
    let t = transport(&server, fast());
    assert!(matches!(
        t.watch().await.err(),
        Some(TransportError::Protocol(_))
    ));
}

/// A cursor the hub refuses (a hub restarted after a crash, in an epoch that does not continue
/// it) is dropped and the stream opened afresh at once, not after a long backoff.
#[tokio::test]
async fn a_refused_cursor_is_dropped_and_the_stream_opened_afresh() {
    use futures::StreamExt;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/mesh/notifications"))
        .and(wiremock::matchers::header_exists("last-event-id"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"code":"invalid_cursor","message":"start again without one"}"#,
            "application/json",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    let body = "event: change\nid: 5-abc\ndata: {\"feed\":{\"scope\":{\"mesh\":\"ann\"},\"name\":\"devices\"},\"head\":5}\n\n";
    Mock::given(method("GET"))
        .and(path("/mesh/notifications"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    assert_eq!(t.watch().await.unwrap().collect::<Vec<_>>().await.len(), 1);
    // Resumes with 5-abc, is refused, opens again without it.
    assert_eq!(t.watch().await.unwrap().collect::<Vec<_>>().await.len(), 1);
    let sent: Vec<bool> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers.contains_key("last-event-id"))
        .collect();
    assert_eq!(sent, [false, true, false]);
}

// ---- blob calls ----------------------------------------------------------------------------

fn folder() -> mesh_core::id::FolderId {
    "f1".parse().unwrap()
}

fn frames(objects: &[&[u8]]) -> (Vec<ChunkHash>, Vec<u8>) {
    let mut body = Vec::new();
    let mut hashes = Vec::new();
    for o in objects {
        let h = ChunkHash::of(o);
        pack::write_frame(&mut body, &h, o);
        hashes.push(h);
    }
    (hashes, body)
}

async fn pack_answer(status: u16, body: Vec<u8>) -> (MockServer, HttpTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/mesh/folders/f1/objects/fetch"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/x-mesh-pack"))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    (server, t)
}

#[tokio::test]
async fn fetched_objects_are_verified_and_sent_as_hash_lists() {
    let objects: [&[u8]; 3] = [b"one", b"", b"three"];
    let (hashes, body) = frames(&objects);
    let (server, t) = pack_answer(200, body).await;
    let mut asked = hashes.clone();
    asked.insert(1, ChunkHash::of(b"not there"));
    let got = t.get_objects(&folder(), &asked).await.unwrap();
    assert_eq!(got.len(), 3);
    for ((h, d), o) in got.iter().zip(objects) {
        assert_eq!((h, d.as_slice()), (&ChunkHash::of(o), o));
    }
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body, pack::encode_hashes(&asked));
    assert_eq!(
        reqs[0].headers.get("content-type").unwrap(),
        "application/x-mesh-hashes"
    );
    assert_eq!(
        reqs[0].headers.get("authorization").unwrap(),
        "Bearer token"
    );
    // Nothing asked, nothing sent.
    assert!(t.get_objects(&folder(), &[]).await.unwrap().is_empty());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_fetch_answer_cut_mid_frame_keeps_the_complete_objects() {
    let (hashes, body) = frames(&[&[1u8; 5000], &[2u8; 5000], &[3u8; 5000]]);
    let cut = body.len() - 2000;
    // A body that ends inside the third frame.
    let (_server, t) = pack_answer(200, body[..cut].to_vec()).await;
    let got = t.get_objects(&folder(), &hashes).await.unwrap();
    assert_eq!(got.iter().map(|o| o.0).collect::<Vec<_>>(), hashes[..2]);

    // A connection that promises the whole pack and hangs up inside the third frame.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let full = body.len();
    let partial = body[..cut].to_vec();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 64 << 10];
            let _ = sock.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-mesh-pack\r\ncontent-length: {full}\r\n\r\n"
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&partial).await;
            let _ = sock.shutdown().await;
        }
    });
    let t = HttpTransport::with_config(&format!("http://{addr}"), "t", fast()).unwrap();
    let got = t.get_objects(&folder(), &hashes).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1, vec![2u8; 5000]);
    // Asking again for the rest is how the download resumes.
    assert_eq!(got.iter().map(|o| o.0).collect::<Vec<_>>(), hashes[..2]);
}

#[tokio::test]
async fn a_fetch_cut_before_any_complete_object_is_an_error() {
    let (hashes, body) = frames(&[&[1u8; 5000]]);
    let (_server, t) = pack_answer(200, body[..100].to_vec()).await;
    assert!(matches!(
        t.get_objects(&folder(), &hashes).await.unwrap_err(),
        TransportError::Protocol(_)
    ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 64 << 10];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5036\r\n\r\n0123456789")
                .await;
            let _ = sock.shutdown().await;
        }
    });
    let t = HttpTransport::with_config(&format!("http://{addr}"), "t", fast()).unwrap();
    let e = t.get_objects(&folder(), &hashes).await.unwrap_err();
    assert!(matches!(e, TransportError::Offline(_)), "{e:?}");
    assert!(e.is_retryable());
    // A connection lost before any object is retried like any connection failure.
    assert_eq!(accepted.load(Ordering::SeqCst), 1 + fast().retries as usize);
}

#[tokio::test]
async fn a_fetched_object_with_wrong_bytes_is_a_protocol_error() {
    let (hashes, mut body) = frames(&[b"good", b"also good"]);
    *body.last_mut().unwrap() ^= 1;
    let (server, t) = pack_answer(200, body).await;
    match t.get_objects(&folder(), &hashes).await.unwrap_err() {
        TransportError::Protocol(m) => assert!(m.contains("does not match"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "not retried"
    );

    // An object that was not asked for, even with the right bytes, is refused too.
    let (_, body) = frames(&[b"uninvited"]);
    let (_server, t) = pack_answer(200, body).await;
    assert!(matches!(
        t.get_objects(&folder(), &hashes).await.unwrap_err(),
        TransportError::Protocol(_)
    ));

    // So is a frame announcing an object over the size limit.
    let mut body = hashes[0].as_bytes().to_vec();
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(&[0; 100]);
    let (_server, t) = pack_answer(200, body).await;
    assert!(matches!(
        t.get_objects(&folder(), &hashes).await.unwrap_err(),
        TransportError::Protocol(_)
    ));
}

#[tokio::test]
async fn blob_calls_map_403_and_404_and_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/mesh/folders/f1/objects"))
        .respond_with(ResponseTemplate::new(403).set_body_raw(
            r#"{"code":"permission_denied","message":"bob (reader) may not create entries"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/mesh/folders/f1/objects/fetch"))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            r#"{"code":"not_found","message":"folder f1 not found"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/mesh/folders/f1/objects/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            r#"{"code":"not_found","message":"folder f1 not found"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    let o = (ChunkHash::of(b"x"), b"x".to_vec());
    assert_eq!(
        t.put_objects(&folder(), vec![o.clone()]).await.unwrap_err(),
        TransportError::Forbidden("bob (reader) may not create entries".into())
    );
    for e in [
        t.get_objects(&folder(), &[o.0]).await.unwrap_err(),
        t.missing_objects(&folder(), &[o.0])
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        match e {
            TransportError::Remote(c) => assert_eq!(c.code(), ErrorCode::NotFound),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    // A forged upload refused by the hub comes back as invalid_blob.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"code":"invalid_blob","message":"object does not match its content"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    match t.put_objects(&folder(), vec![o]).await.unwrap_err() {
        TransportError::Remote(c) => assert_eq!(c.code(), ErrorCode::InvalidBlob),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn uploads_and_long_hash_lists_are_split_into_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/mesh/folders/a%2Fb%20c/objects"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/mesh/folders/a%2Fb%20c/objects/missing"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(Vec::new(), "application/x-mesh-hashes"),
        )
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    let f: mesh_core::id::FolderId = "a/b c".parse().unwrap();
    // 3 MiB objects: one per request (4 MiB batches); small ones share one.
    let mut objects: Vec<_> = (0..3u8)
        .map(|i| {
            let d = vec![i; 3 << 20];
            (ChunkHash::of(&d), d)
        })
        .collect();
    objects
        .extend((0..100u32).map(|i| (ChunkHash::of(&i.to_be_bytes()), i.to_be_bytes().to_vec())));
    t.put_objects(&f, objects.clone()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3);
    let sent: Vec<_> = reqs
        .iter()
        .flat_map(|r| pack::decode(&r.body).unwrap())
        .collect();
    assert_eq!(sent, objects, "every object once, in order");
    assert_eq!(
        reqs[0].headers.get("content-type").unwrap(),
        "application/x-mesh-pack"
    );

    let hashes: Vec<ChunkHash> = (0..70_000u32)
        .map(|i| ChunkHash::of(&i.to_le_bytes()))
        .collect();
    assert!(t.missing_objects(&f, &hashes).await.unwrap().is_empty());
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 5);
    assert_eq!(reqs[3].body.len(), 65_536 * 32);
    assert_eq!(reqs[4].body.len(), (70_000 - 65_536) * 32);

    // An answer naming a hash that was not asked about is not the protocol.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            pack::encode_hashes(&[ChunkHash::of(b"?")]),
            "application/x-mesh-hashes",
        ))
        .mount(&server)
        .await;
    let t = transport(&server, fast());
    assert!(matches!(
        t.missing_objects(&f, &hashes[..3]).await.unwrap_err(),
        TransportError::Protocol(_)
    ));
}

/// A pull of `folder`'s `todos` from `since`, `limit` entries.
fn pull_todos(since: u64, limit: u32) -> Request {
    Request::Pull {
        from: "probe".parse().unwrap(),
        feed: "folder:f1@ann/todos".parse().unwrap(),
        since: mesh_core::store::Cursor(since),
        limit,
    }
}

/// A hub's answer to a pull says in its `Mesh-Next` header where the next page starts, when
/// one follows, and the transport tells it before it reads the answer (see `docs/protocol.md`,
/// "Asking ahead"). The last page says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulls_answer_says_where_the_next_page_starts() {
    use crate::hubs::Rest;
    use mesh_client::transport::NextPage;
    use serde_json::json;

    let hub = TestHub::memory().await;
    let token = hub.token("ann", "ann-laptop");
    let ann = Rest::new(&hub, token.clone());
    let (s, _) = ann
        .post("/mesh/folders", json!({"name": "F", "id": "f1@ann"}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = ann
        .post("/mesh/folders/f1@ann/feeds", json!({"name": "todos"}))
        .await;
    assert_eq!(s, 201);
    for id in ["a", "b", "c"] {
        let (s, _) = ann
            .post(
                "/mesh/folders/f1@ann/feeds/todos/entries",
                json!({"id": id, "title": id}),
            )
            .await;
        assert_eq!(s, 201);
    }
    // The header itself, beside the answer's own `next`.
    let raw = |since: u64| {
        let url = format!("{}/mesh/sync", hub.url);
        let token = token.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&pull_todos(since, 2))
                .send()
                .await
                .unwrap();
            let header = r
                .headers()
                .get("mesh-next")
                .map(|v| v.to_str().unwrap().to_owned());
            let Response::Changes { next, more, .. } = r.json().await.unwrap() else {
                panic!("not changes")
            };
            (header, next.0, more)
        }
    };
    let (header, next, more) = raw(0).await;
    assert!(more);
    assert_eq!(
        header,
        Some(next.to_string()),
        "the header says the body's next"
    );
    let (header, _, more) = raw(next).await;
    assert!(!more);
    assert_eq!(header, None, "no next page, no header");

    // Through the transport.
    let t = hub.transport("ann", "ann-phone");
    let (told, heard) = NextPage::channel();
    let Response::Changes { next, more, .. } = t.send_pull(pull_todos(0, 2), &told).await.unwrap()
    else {
        panic!("not changes")
    };
    assert!(more);
    drop(told);
    assert_eq!(heard.told().await, Some(next));
    let (told, heard) = NextPage::channel();
    t.send_pull(pull_todos(next.0, 2), &told).await.unwrap();
    drop(told);
    assert_eq!(heard.told().await, None);

    // A large page with more after it: its headers leave before its body is made, so its
    // length is not known up front (the body is chunked), and the coding is said up front.
    for i in 0..70 {
        let (s, _) = ann
            .post(
                "/mesh/folders/f1@ann/feeds/todos/entries",
                json!({"id": format!("x{i}"), "title": "a title that compresses well"}),
            )
            .await;
        assert_eq!(s, 201);
    }
    for zstd in [false, true] {
        let mut ask = reqwest::Client::new()
            .post(format!("{}/mesh/sync", hub.url))
            .bearer_auth(&token)
            .json(&pull_todos(0, 66));
        if zstd {
            ask = ask.header("accept-encoding", "zstd");
        }
        let r = ask.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let header = r
            .headers()
            .get("mesh-next")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(r.headers().get("content-length").is_none(), "zstd {zstd}");
        let coded = r
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(coded.as_deref(), zstd.then_some("zstd"));
        let body = r.bytes().await.unwrap();
        let json = match zstd {
            true => zstd::decode_all(&body[..]).unwrap(),
            false => body.to_vec(),
        };
        let Response::Changes {
            entries,
            next,
            more,
            ..
        } = serde_json::from_slice(&json).unwrap()
        else {
            panic!("not changes")
        };
        assert_eq!((entries.len(), more), (66, true));
        assert_eq!(header, Some(next.to_string()), "zstd {zstd}");
    }
    let (told, heard) = NextPage::channel();
    let Response::Changes { entries, next, .. } =
        t.send_pull(pull_todos(0, 66), &told).await.unwrap()
    else {
        panic!("not changes")
    };
    assert_eq!(entries.len(), 66);
    drop(told);
    assert_eq!(heard.told().await, Some(next));
    hub.stop().await;
}

/// What the transport tells of a `Mesh-Next` header: the number, or nothing when it is not
/// one (or the answer is an error); the answer is read all the same.
#[tokio::test]
async fn a_mesh_next_header_that_is_not_a_position_is_ignored() {
    use mesh_client::transport::NextPage;

    let body = r#"{"type":"changes","feed":{"scope":{"folder":"f1@ann"},"name":"todos"},"entries":[],"next":42,"more":true}"#;
    for (status, header, want) in [
        (200, Some("41"), Some(41)),
        (200, Some(" 7 "), Some(7)),
        (200, None, None),
        (200, Some("abc"), None),
        (200, Some("-1"), None),
        (200, Some("+5"), None),
        (200, Some("4.5"), None),
        (200, Some("99999999999999999999999"), None),
        (200, Some("18446744073709551616"), None),
        (200, Some(""), None),
        (404, Some("41"), None),
    ] {
        let server = MockServer::start().await;
        let mut reply = ResponseTemplate::new(status);
        reply = if status == 200 {
            reply.set_body_raw(body, "application/json")
        } else {
            reply.set_body_raw(r#"{"code":"not_found","message":"no"}"#, "application/json")
        };
        if let Some(h) = header {
            reply = reply.insert_header("mesh-next", h);
        }
        Mock::given(method("POST"))
            .and(path("/mesh/sync"))
            .respond_with(reply)
            .mount(&server)
            .await;
        let t = transport(&server, fast());
        let (told, heard) = NextPage::channel();
        let answer = t.send_pull(pull_todos(0, 2), &told).await;
        drop(told);
        assert_eq!(
            heard.told().await.map(|c| c.0),
            want,
            "status {status}, header {header:?}"
        );
        assert_eq!(answer.is_ok(), status == 200, "{answer:?}");
    }
}
