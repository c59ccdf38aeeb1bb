//! What an application relies on through a real hub: typed error kinds on `sync_now` and in
//! `Event::SyncError`, the notification stream kept alive across hub restarts, `whoami`.

use std::time::Duration;

use futures::StreamExt;
use mesh_client::sync::SyncOptions;
use mesh_client::transport::{HttpConfig, HttpTransport, Transport, TransportError};
use mesh_client::{ErrorKind, Event, MeshClient};
use mesh_core::sync::Request;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::builder;
use crate::hubs::{fast, TestHub};

fn no_retries() -> HttpConfig {
    fast().with_retries(0)
}

fn options() -> SyncOptions {
    SyncOptions::default()
        .with_backoff_min(Duration::from_millis(20))
        .with_backoff_max(Duration::from_millis(300))
        .with_poll_interval(Duration::from_secs(3600))
}

/// The next `SyncError` event, within a bounded time.
async fn next_sync_error(
    events: &mut (impl futures::Stream<Item = Event> + Unpin),
) -> (mesh_client::SyncError, bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if let Event::SyncError {
                error, retrying, ..
            } = e
            {
                return (error, retrying);
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("a SyncError event")
}

#[tokio::test]
async fn each_hub_answer_has_its_own_error_kind() {
    let cases: &[(u16, &str, ErrorKind)] = &[
        (
            401,
            r#"{"code":"unauthorized","message":"no"}"#,
            ErrorKind::Unauthorized,
        ),
        (
            401,
            r#"{"code":"revoked","message":"device revoked"}"#,
            ErrorKind::Revoked,
        ),
        (
            401,
            r#"{"code":"untrusted_certificate","message":"?"}"#,
            ErrorKind::Unauthorized,
        ),
        (
            403,
            r#"{"code":"permission_denied","message":"readers read"}"#,
            ErrorKind::PermissionDenied,
        ),
        (
            413,
            r#"{"code":"payload_too_large","message":"big"}"#,
            ErrorKind::Quota,
        ),
        (
            400,
            r#"{"code":"limit_exceeded","message":"too many"}"#,
            ErrorKind::Quota,
        ),
        (
            400,
            r#"{"code":"invalid_signature","message":"forged"}"#,
            ErrorKind::Protocol,
        ),
        (
            400,
            r#"{"code":"invalid_query","message":"$top"}"#,
            ErrorKind::InvalidInput,
        ),
        (
            404,
            r#"{"code":"not_found","message":"folder"}"#,
            ErrorKind::NotFound,
        ),
        (
            412,
            r#"{"code":"precondition_failed","message":"etag"}"#,
            ErrorKind::Conflict,
        ),
        (
            429,
            r#"{"code":"rate_limited","message":"slow"}"#,
            ErrorKind::RateLimited,
        ),
        (
            500,
            r#"{"code":"internal","message":"oops"}"#,
            ErrorKind::Transport,
        ),
        (200, r#"{"type":"#, ErrorKind::Protocol),
    ];
    for (status, body, kind) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/mesh/sync"))
            .respond_with(ResponseTemplate::new(*status).set_body_raw(*body, "application/json"))
            .mount(&server)
            .await;
        let t = HttpTransport::with_config(&server.uri(), "token", no_retries()).unwrap();
        let e = t
            .send(Request::Feeds {
                from: "device-1".parse().unwrap(),
                only: None,
                certificates: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), *kind, "{status} {body}: {e:?}");
    }
    // Nothing listening: offline.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let t = HttpTransport::with_config(&url, "token", no_retries()).unwrap();
    let e = t.watch().await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Offline, "{e:?}");
    assert!(matches!(e, TransportError::Offline(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_unauthorized_in_sync_now_and_in_events_not_a_string() {
    let hub = TestHub::memory().await;
    hub.token("ann", "ann-laptop");
    let client = builder("ann", "ann-laptop")
        .remote(
            "hub".parse().unwrap(),
            HttpTransport::with_config(&hub.url, "not-a-token", no_retries()).unwrap(),
        )
        .sync_options(options().with_auto(false))
        .build()
        .await
        .unwrap();
    let mut events = client.events();
    let e = client.sync_now().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    let (error, retrying) = next_sync_error(&mut events).await;
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(!retrying, "a refused token is not retried by itself");
    client.close();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hub_is_offline_in_sync_now_and_in_events() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let client: MeshClient = builder("ann", "ann-laptop")
        .remote(
            "hub".parse().unwrap(),
            HttpTransport::with_config(&url, "token", no_retries()).unwrap(),
        )
        .sync_options(options().with_auto(false))
        .build()
        .await
        .unwrap();
    let mut events = client.events();
    let e = client.sync_now().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Offline, "{e}");
    let (error, retrying) = next_sync_error(&mut events).await;
    assert_eq!(error.kind, ErrorKind::Offline);
    assert!(retrying);
    client.close();
}

/// Waits (bounded) for the first event that `pick` accepts.
async fn wait_for<T>(
    events: &mut (impl futures::Stream<Item = Event> + Unpin),
    within: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(&e) {
                return Some(t);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_device_hears_a_change_within_two_seconds_of_a_hub_restart() {
    use crate::e2e::{admin, HubProcess};
    use mesh_core::model::EntryDraft;

    let dir = tempfile::tempdir().unwrap();
    admin(dir.path(), &["user", "add", "ann"]);
    let token_a = admin(dir.path(), &["device", "add", "ann", "a"]);
    let token_b = admin(dir.path(), &["device", "add", "ann", "b"]);
    let mut hub = HubProcess::start(dir.path(), "127.0.0.1:0");
    let url = hub.url.clone();
    // Another device sets up a folder (and later writes); it syncs only when asked.
    let b = builder("ann", "b")
        .remote(
            "hub".parse().unwrap(),
            HttpTransport::with_config(&url, &token_b, no_retries()).unwrap(),
        )
        .sync_options(options().with_auto(false))
        .build()
        .await
        .unwrap();
    let folder = b
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let feed = b
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    b.sync_now().await.unwrap();
    // The idle device: default timing, except that the poll cannot be what saves it. It
    // writes nothing, so after its first sync nothing makes it sync again by itself.
    let a = builder("ann", "a")
        .remote(
            "hub".parse().unwrap(),
            HttpTransport::with_config(&url, &token_a, no_retries()).unwrap(),
        )
        .sync_options(SyncOptions::default().with_poll_interval(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap();
    a.sync_now().await.unwrap();
    assert!(a.folder(&folder.id).await.unwrap().is_some());
    let mut events = a.events();

    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    let addr = hub.addr().to_owned();
    drop(hub);
    let offline = wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Offline { .. }).then_some(())
    })
    .await;
    assert!(offline.is_some(), "an idle device says it is offline");

    let hub = HubProcess::start(dir.path(), &addr);
    assert_eq!(hub.url, url);
    let written = b
        .put(
            &folder.id,
            &feed,
            EntryDraft::new("after the restart", serde_json::json!(1)),
        )
        .await
        .unwrap();
    b.sync_now().await.unwrap();
    let pushed = std::time::Instant::now();
    let id = written.entry_id().clone();
    let mut online = false;
    let heard = wait_for(&mut events, Duration::from_secs(2), |e| match e {
        Event::Online { .. } => {
            online = true;
            None
        }
        Event::EntryChanged { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    assert!(
        heard.is_some(),
        "the idle device heard nothing within 2 s of the write (online again: {online})"
    );
    assert!(online, "Online came before the change");
    eprintln!(
        "heard the change {:?} after it reached the hub",
        pushed.elapsed()
    );
    a.close();
    b.close();
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_a_token_of_another_user_or_device() {
    let hub = TestHub::memory().await;
    let ann_laptop = hub.token("ann", "ann-laptop");
    let ann_phone = hub.token("ann", "ann-phone");
    let (status, me) = crate::hubs::Rest::new(&hub, ann_laptop.clone())
        .get("/mesh/me")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        me,
        serde_json::json!({"user": "ann", "device": "ann-laptop"})
    );

    for (user, device, token) in [
        ("bob", "bob-desk", &ann_laptop),
        ("ann", "ann-laptop", &ann_phone),
    ] {
        let c = builder(user, device)
            .remote(
                "hub".parse().unwrap(),
                HttpTransport::with_config(&hub.url, token, no_retries()).unwrap(),
            )
            .sync_options(options().with_auto(false))
            .build()
            .await
            .unwrap();
        let f = c
            .create_folder("Mine", "app/notes".parse().unwrap())
            .await
            .unwrap();
        let mut events = c.events();
        let e = c.sync_now().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Mismatch, "{user}/{device}: {e}");
        let (error, retrying) = next_sync_error(&mut events).await;
        assert_eq!(error.kind, ErrorKind::Mismatch);
        assert!(!retrying);
        // Nothing of this client reached the hub.
        let (status, _) = crate::hubs::Rest::new(&hub, ann_laptop.clone())
            .get(&format!("/mesh/folders/{}", f.id))
            .await;
        assert_eq!(status, 404, "{user}/{device}");
        c.close();
    }
    // The right token syncs.
    let c = builder("ann", "ann-laptop")
        .remote(
            "hub".parse().unwrap(),
            HttpTransport::with_config(&hub.url, &ann_laptop, no_retries()).unwrap(),
        )
        .sync_options(options())
        .build()
        .await
        .unwrap();
    c.sync_now().await.unwrap();
    c.close();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_of_a_user_without_an_account_is_refused_and_withdrawn() {
    let hub = TestHub::memory().await;
    let _bob = hub.token("bob", "bob-desk");
    let ann = builder("ann", "ann-laptop")
        .remote("hub".parse().unwrap(), hub.transport("ann", "ann-laptop"))
        .sync_options(options().with_auto(false))
        .build()
        .await
        .unwrap();
    let mut events = ann.events();
    let f = ann
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap()
        .id;
    for user in ["nobody", "bob"] {
        ann.invite(&f, &user.parse().unwrap(), mesh_core::model::Role::Reader)
            .await
            .unwrap();
    }
    ann.sync_now().await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if let Event::Refused { id, kind, .. } = e {
                return (id, kind);
            }
        }
        panic!("the event stream ended")
    })
    .await
    .expect("a Refused event within 10 s");
    assert_eq!(refused.0.as_str(), "nobody");
    assert_eq!(refused.1, ErrorKind::NotFound);
    let mut users: Vec<String> = ann
        .members(&f)
        .await
        .unwrap()
        .iter()
        .map(|m| m.user.to_string())
        .collect();
    users.sort();
    assert_eq!(users, ["ann", "bob"]);
    // The withdrawal reaches the hub, and nothing more is refused.
    ann.sync_now().await.unwrap();
}
