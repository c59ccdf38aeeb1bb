//! The data directory: private to the hub's user, one hub at a time, and the hub's secret for
//! cursors kept in it.

use std::process::Command;

use mesh_hub::{Hub, HubError};
use serde_json::json;

use crate::hubs::{Rest, TestHub};

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_private_and_held_by_one_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = TestHub::start(Hub::builder().data_dir(&dir).open().unwrap()).await;
    let second = Hub::builder().data_dir(&dir).open();
    assert!(
        matches!(second, Err(HubError::DataDirInUse(_))),
        "{second:?}"
    );
    // Some writes, so that every store has its files.
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let (s, _) = ann
        .post("/mesh/folders", json!({"name": "F", "id": "f1@ann"}))
        .await;
    assert_eq!(s, 201);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        let mut files = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            files += 1;
        }
        assert!(files >= 5, "stores, lock and secret: {files} files");
    }
    // Its metrics count the stores' files.
    let text = reqwest::get(format!("{}/metrics", hub.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let replica: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"mesh_hub_store_bytes{store="replica_file"} "#))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!(replica > 0);
    // A cursor survives a restart of a hub that opened its directory.
    let path = "/mesh/folders/f1@ann/feeds/members/changes";
    let (s, v) = ann.get(path).await;
    assert_eq!(s, 200, "{v}");
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    hub.stop().await;
    let hub = TestHub::start(Hub::builder().data_dir(&dir).open().unwrap()).await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop2"));
    let (s, v) = ann.get(&format!("{path}?cursor={cursor}")).await;
    assert_eq!(s, 200, "{v}");
    hub.stop().await;
    // A hub with another secret (made without claiming the directory) refuses it: cursors
    // are authenticated, not just checksummed.
    let hub = TestHub::start(Hub::builder().data_dir(&dir).build().unwrap()).await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop3"));
    let (s, v) = ann.get(&format!("{path}?cursor={cursor}")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_cursor")));
    hub.stop().await;
}

#[test]
fn a_second_hub_command_on_the_same_directory_stops_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Hub::builder().data_dir(tmp.path()).open().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-hub"))
        .arg("--data")
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another hub"), "{err}");
    drop(first);
}

#[cfg(unix)]
#[test]
fn admin_commands_make_the_directory_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-hub"))
        .arg("--data")
        .arg(&dir)
        .args(["user", "add", "ann"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&dir), 0o700);
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// A hub that has stopped serving has let go of its directory: the next hub opens it at
/// once. Its housekeeping runs at once when serving starts (and then every half second); with
/// many devices to read, that first round is still running when a hub stopped right away is
/// done, and it must not keep the hub (and the directory's lock) alive past the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hub_lets_go_of_its_directory_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    {
        // Set-up only: commits without waiting for the disk.
        let hub = Hub::builder()
            .data_dir(&dir)
            .durability(mesh_store::Durability::Normal)
            .open()
            .unwrap();
        let ann = "ann".parse().unwrap();
        hub.accounts().add_user(&ann).unwrap();
        for i in 0..20000 {
            let d = format!("d{i}").parse().unwrap();
            hub.accounts().add_device(&ann, &d, "d", "laptop").unwrap();
        }
    }
    for round in 0..12 {
        let hub = Hub::builder()
            .data_dir(&dir)
            .open()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let hub = TestHub::start(hub).await;
        let r = reqwest::get(format!("{}/health", hub.url)).await.unwrap();
        assert_eq!(r.status(), 200);
        hub.stop().await;
    }
}

/// A pull (and the REST changes resource) is answered with the entries' JSON as the replica
/// keeps it, not decoded and encoded again (issue 16, item 2): a stored body's own spacing,
/// which no encoder writes, reaches the asker, and the answer still reads as the entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_passes_stored_entries_on_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = TestHub::start(Hub::builder().data_dir(&dir).open().unwrap()).await;
    let token = hub.token("ann", "ann-laptop");
    let ann = Rest::new(&hub, token.clone());
    let (s, _) = ann
        .post("/mesh/folders", json!({"name": "F", "id": "f1@ann"}))
        .await;
    assert_eq!(s, 201);
    hub.stop().await;
    let db = rusqlite::Connection::open(dir.join(mesh_hub::REPLICA_DB)).unwrap();
    let changed = db
        .execute(
            "UPDATE entries SET body = '{ ' || substr(body, 2)
             WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = 'folder:f1@ann/members')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1, "the folder's one member record");
    drop(db);

    let hub = TestHub::start(Hub::builder().data_dir(&dir).open().unwrap()).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/mesh/sync", hub.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(
            r#"{"type":"pull","from":"probe","feed":{"scope":{"folder":"f1@ann"},"name":"members"},"since":0,"limit":10}"#,
        )
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#""entries":[{ ""#),
        "the stored body as it is: {text}"
    );
    let response: mesh_core::sync::Response = serde_json::from_str(&text).unwrap();
    let mesh_core::sync::Response::Changes {
        entries,
        next,
        more,
        ..
    } = response
    else {
        panic!("{text}")
    };
    assert_eq!((entries.len(), next.0, more), (1, 1, false), "{text}");
    assert_eq!(entries[0].sync.id.as_str(), "ann");
    // So does the REST changes resource, in JSON.
    let text = reqwest::Client::new()
        .get(format!(
            "{}/mesh/folders/f1@ann/feeds/members/changes",
            hub.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#""entries":[{ ""#),
        "the stored body as it is: {text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["entries"][0]["sync"]["id"], "ann", "{text}");
    hub.stop().await;
}
