//! How devices join and leave (issue 12, credentials): enrollment codes minted by a device
//! and used once, revocations another device confirms, revoking a device revokes what it
//! enrolled, the admin's revocations and user removal closing streams within a second, and
//! last-seen times kept across restarts.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_client::transport::{HttpTransport, Transport, TransportError};
use mesh_core::sync::Request;
use mesh_hub::Hub;
use serde_json::json;

use crate::e2e::{admin, HubProcess};
use crate::hubs::{fast, send, Rest, TestHub};

fn feeds() -> Request {
    Request::Feeds {
        from: "replica".parse().unwrap(),
        only: None,
        certificates: false,
    }
}

/// Registers a device with a code, without a token: `(status, body)`.
async fn register(hub: &TestHub, id: &str, code: &serde_json::Value) -> (u16, serde_json::Value) {
    send(
        reqwest::Client::new()
            .post(format!("{}/mesh/devices", hub.url))
            .json(&json!({"id": id, "code": code})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_from_a_device_registers_one_new_device_once() {
    let hub = TestHub::memory().await;
    let laptop = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let (s, c) = laptop.post("/mesh/devices/codes", json!(null)).await;
    assert_eq!(s, 201, "{c}");
    let code = c["code"].clone();
    assert!(code.as_str().unwrap().starts_with("mesh-code-"));
    let (s, doc) = register(&hub, "ann-tablet", &code).await;
    assert_eq!(s, 201, "{doc}");
    assert_eq!(doc["device"]["owner"], "ann");
    let tablet = Rest::new(&hub, doc["token"].as_str().unwrap().to_owned());
    let (s, devices) = tablet.get("/mesh/devices").await;
    assert_eq!((s, devices.as_array().unwrap().len()), (200, 2));
    // Used once; a wrong code and a token without a code register nothing.
    assert_eq!(register(&hub, "ann-tablet-2", &code).await.0, 404);
    assert_eq!(register(&hub, "ann-x", &json!("mesh-code-00")).await.0, 404);
    let (s, _) = laptop.post("/mesh/devices", json!({"id": "ann-y"})).await;
    assert_eq!(s, 400, "a device token alone does not register devices");
    let (_, devices) = laptop.get("/mesh/devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 2);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_stolen_device_revokes_what_it_enrolled_unless_confirmed() {
    let hub = TestHub::memory().await;
    let laptop = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let phone = Rest::new(&hub, hub.token("ann", "ann-phone"));
    // The laptop's token is stolen: the thief enrolls two devices with it.
    let mut thief = Vec::new();
    for id in ["evil-1", "evil-2"] {
        let (_, c) = laptop.post("/mesh/devices/codes", json!(null)).await;
        let (s, doc) = register(&hub, id, &c["code"]).await;
        assert_eq!(s, 201);
        let token = doc["token"].as_str().unwrap().to_owned();
        thief.push((
            HttpTransport::with_config(&hub.url, token.clone(), fast()).unwrap(),
            token,
        ));
    }
    // A stolen token cannot revoke the user's other devices on its own.
    let (s, _) = laptop.delete("/mesh/devices/ann-phone").await;
    assert_eq!(s, 202);
    assert_eq!(phone.get("/mesh/devices").await.0, 200);
    // The user confirms one of the two from the phone (say it was really theirs)…
    let (s, _) = phone
        .post("/mesh/devices/evil-2/confirm", json!(null))
        .await;
    assert_eq!(s, 204);
    let (s, _) = Rest::new(&hub, thief[0].1.clone())
        .post("/mesh/devices/evil-1/confirm", json!(null))
        .await;
    assert_eq!(s, 403, "a device cannot confirm itself");
    // …and revokes the laptop with the admin: the unconfirmed device it enrolled goes too.
    let mut stream = thief[0].0.watch().await.unwrap();
    hub.hub
        .revoke_device(&"ann-laptop".parse().unwrap())
        .unwrap();
    assert_eq!(
        thief[0].0.send(feeds()).await.unwrap_err(),
        TransportError::Unauthorized
    );
    assert!(
        thief[1].0.send(feeds()).await.is_ok(),
        "the confirmed device stays"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the enrolled device's stream closes too");
    assert!(end.is_none());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_revokes_every_device_and_keeps_the_id() {
    let hub = TestHub::memory().await;
    let laptop = hub.transport("ann", "ann-laptop");
    let phone = hub.transport("ann", "ann-phone");
    let mut stream = phone.watch().await.unwrap();
    hub.hub.remove_user(&"ann".parse().unwrap()).unwrap();
    assert_eq!(
        laptop.send(feeds()).await.unwrap_err(),
        TransportError::Unauthorized
    );
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("closed");
    assert!(end.is_none());
    assert!(!hub
        .hub
        .accounts()
        .has_user(&"ann".parse().unwrap())
        .unwrap());
    assert!(
        hub.hub
            .accounts()
            .add_user(&"ann".parse().unwrap())
            .is_err(),
        "never reused"
    );
    hub.stop().await;
}

/// The admin command revokes a device of a running hub process: its open stream closes
/// within a second, not at the next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_the_admin_command_closes_streams_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    admin(dir.path(), &["user", "add", "ann"]);
    let token = admin(dir.path(), &["device", "add", "ann", "ann-phone"]);
    let hub = HubProcess::start(dir.path(), "127.0.0.1:0");
    let phone = HttpTransport::with_config(&hub.url, token, fast()).unwrap();
    let mut stream = phone.watch().await.unwrap();
    let t0 = Instant::now();
    admin(dir.path(), &["device", "revoke", "ann-phone"]);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("closed");
    assert!(end.is_none());
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "closed after {:?}",
        t0.elapsed()
    );
    // `device list` shows the revoked device, and `user remove` removes the user.
    let list = admin(dir.path(), &["device", "list", "ann"]);
    assert!(
        list.contains("ann-phone") && list.contains("revoked"),
        "{list}"
    );
    let out = admin(dir.path(), &["user", "remove", "ann"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!admin(dir.path(), &["user", "list"]).contains("ann"));
}

/// Last-seen times are written to the accounts and come back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_is_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(Hub::builder().data_dir(dir.path()).build().unwrap()).await;
    let laptop = hub.transport("ann", "ann-laptop");
    laptop.send(feeds()).await.unwrap();
    hub.stop().await;
    // The hub writes them on shutdown (and every few seconds while it runs).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = Hub::builder().data_dir(dir.path()).build().unwrap();
        let seen = again.accounts().devices(&"ann".parse().unwrap()).unwrap()[0].last_seen;
        if seen.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "last seen never recorded");
        tokio::task::yield_now().await;
    }
}
