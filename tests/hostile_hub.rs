//! Hostile file entries POSTed straight to a hub's REST API by a member of the folder: a
//! device that maps the folder refuses each with an event and writes nothing outside (or
//! inside) its directory for them.

use futures::StreamExt;
use mesh::client::mapping::MappingOptions;
use mesh::client::transport::{HttpTransport, Transport};
use mesh::client::{Event, MappingEvent, MeshClient, SyncOptions};
use mesh::core::blob::{ChunkHash, Manifest};
use mesh::core::model::{FilePath, Role};
use mesh::hub::Hub;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_posted_to_the_hub_are_refused_by_the_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::builder().build().unwrap();
    let (ann, bob) = ("ann".parse().unwrap(), "bob".parse().unwrap());
    hub.accounts().add_user(&ann).unwrap();
    hub.accounts().add_user(&bob).unwrap();
    let ta = hub
        .accounts()
        .add_device(&ann, &"ann-pc".parse().unwrap(), "pc", "pc")
        .unwrap();
    let tb = hub
        .accounts()
        .add_device(&bob, &"bob-pc".parse().unwrap(), "pc", "pc")
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hub.clone().serve(listener, std::future::pending()));

    let client = |user: &str, device: &str, token: &str| {
        MeshClient::builder()
            .user(user.parse().unwrap())
            .device(device.parse().unwrap())
            .sync_options(SyncOptions::default().with_auto(false))
            .remote(
                "hub".parse().unwrap(),
                HttpTransport::new(&url, token).unwrap(),
            )
            .build()
    };
    let a = client("ann", "ann-pc", &ta).await.unwrap();
    let b = client("bob", "bob-pc", &tb).await.unwrap();
    let folder = a
        .create_folder("Shared", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    a.invite(&folder, &bob, Role::Full).await.unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    b.accept(&folder).await.unwrap();
    b.sync_now().await.unwrap();
    a.sync_now().await.unwrap();

    // Bob uploads a real blob, then posts entries pointing at it with hostile paths.
    let content = b"pwned".to_vec();
    let chunk = ChunkHash::of(&content);
    let manifest = Manifest::new([(chunk, content.len() as u32)]).unwrap();
    let encoded = manifest.encode();
    let bob_http = HttpTransport::new(&url, &tb).unwrap();
    bob_http
        .put_objects(
            &folder,
            vec![(chunk, content.clone()), (manifest.hash(), encoded)],
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let hostile = [
        "../outside.txt",
        "/tmp/mesh-hostile-absolute.txt",
        "a/../../outside2.txt",
        "a\\..\\win.txt",
        "nul\u{0}byte.txt",
        "LPT1",
        "prn.log",
        "D:/drive.txt",
        "escape/through-link.txt",
    ];
    for (i, path) in hostile.iter().enumerate() {
        let id = match path.parse::<FilePath>() {
            Ok(p) => p.entry_id().to_string(),
            Err(_) => format!("hostile-{i}"),
        };
        let body = json!({
            "id": id,
            "title": "x",
            "content": {"path": path, "kind": "file", "size": 5, "mode": 420,
                        "manifest": manifest.hash().to_string()},
            "media": {"hash": manifest.hash().to_string(), "content_type": "text/plain", "length": 5},
        });
        let r = http
            .post(format!("{url}/mesh/folders/{folder}/feeds/files/entries"))
            .bearer_auth(&tb)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path:?}: {}", r.status());
    }

    let outer = tmp.path().join("outer");
    let mapped = outer.join("mapped");
    std::fs::create_dir_all(&mapped).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outer, mapped.join("escape")).unwrap();
    let mut events = a.events();
    a.sync_now().await.unwrap();
    let quiet = MappingOptions::default()
        .with_watch(false)
        .with_follow_remote(false);
    a.map_folder_with(&folder, &mapped, quiet).await.unwrap();
    a.rescan(&folder).await.unwrap();

    let mut refused = Vec::new();
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        if let Event::Mapping {
            event: MappingEvent::Refused { path, reason },
            ..
        } = e
        {
            refused.push((path, reason));
        }
    }
    for path in hostile {
        assert!(
            refused.iter().any(|(p, _)| p == path),
            "{path:?} was not refused: {refused:?}"
        );
    }
    let outside: Vec<_> = std::fs::read_dir(&outer)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("mapped")]);
    assert!(!std::path::Path::new("/tmp/mesh-hostile-absolute.txt").exists());
    let mut inside: Vec<_> = std::fs::read_dir(&mapped)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    inside.sort();
    assert_eq!(
        inside,
        vec![
            std::ffi::OsString::from(mesh::client::mapping::MARKER_FILE),
            std::ffi::OsString::from("escape")
        ],
        "only the symlink that was there, and the mapping's marker"
    );
}
