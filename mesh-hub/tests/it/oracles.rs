//! No oracles: a user who is not a member of a folder gets the same answer whether the folder
//! exists or not, on every folder endpoint.

use reqwest::Method;
use serde_json::json;

use mesh_client::transport::Transport;
use mesh_core::model::{EntryDraft, FeedKey};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{Cursor, MemoryStore, Store};
use mesh_core::sync::Request;
use mesh_core::time::Timestamp;

use crate::hubs::{Rest, TestHub};

/// Status and body of a request, with the folder id in the body replaced by `F`.
async fn answer(rest: &Rest, method: Method, path: &str, folder: &str) -> (u16, String) {
    let rb = rest.req(method.clone(), path);
    let rb = match method {
        Method::POST | Method::PUT => {
            if path.ends_with("/objects") {
                rb.header("Content-Type", "application/x-mesh-pack")
                    .body(Vec::<u8>::new())
            } else if path.ends_with("/missing") || path.ends_with("/fetch") {
                rb.header("Content-Type", "application/x-mesh-hashes")
                    .body(vec![7u8; 32])
            } else {
                rb.json(&json!({"title": "x", "name": "x", "user": "carol", "role": "reader", "content": {}, "path": "/tmp/x"}))
            }
        }
        _ => rb,
    };
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap().replace(folder, "F");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_cannot_tell_a_folder_exists() {
    let hub = TestHub::memory().await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let carol = Rest::new(&hub, hub.token("carol", "carol-phone"));
    let (s, _) = ann
        .post(
            "/mesh/folders",
            json!({"name": "Secret", "id": "secret@ann"}),
        )
        .await;
    assert_eq!(s, 201);
    ann.post("/mesh/folders/secret@ann/feeds", json!({"name": "notes"}))
        .await;
    let (s, e) = ann
        .post(
            "/mesh/folders/secret@ann/feeds/notes/entries",
            json!({"id": "n1", "title": "t", "content": {}}),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    let hash = "07".repeat(32);
    let endpoints: Vec<(Method, String)> = vec![
        (Method::GET, "/mesh/folders/{f}".into()),
        (Method::DELETE, "/mesh/folders/{f}".into()),
        (Method::GET, "/mesh/folders/{f}/members".into()),
        (Method::POST, "/mesh/folders/{f}/members".into()),
        (Method::GET, "/mesh/folders/{f}/members/ann".into()),
        (Method::PUT, "/mesh/folders/{f}/members/ann".into()),
        (Method::DELETE, "/mesh/folders/{f}/members/ann".into()),
        (Method::GET, "/mesh/folders/{f}/mappings".into()),
        (Method::GET, "/mesh/folders/{f}/mappings/ann-laptop".into()),
        (Method::PUT, "/mesh/folders/{f}/mappings/carol-phone".into()),
        (
            Method::DELETE,
            "/mesh/folders/{f}/mappings/carol-phone".into(),
        ),
        (Method::GET, "/mesh/folders/{f}/news".into()),
        (Method::GET, "/mesh/folders/{f}/feeds".into()),
        (Method::POST, "/mesh/folders/{f}/feeds".into()),
        (Method::GET, "/mesh/folders/{f}/feeds/notes".into()),
        (Method::GET, "/mesh/folders/{f}/feeds/notes/entries".into()),
        (Method::POST, "/mesh/folders/{f}/feeds/notes/entries".into()),
        (
            Method::GET,
            "/mesh/folders/{f}/feeds/notes/entries/n1".into(),
        ),
        (
            Method::PUT,
            "/mesh/folders/{f}/feeds/notes/entries/n1".into(),
        ),
        (
            Method::DELETE,
            "/mesh/folders/{f}/feeds/notes/entries/n1".into(),
        ),
        (Method::GET, "/mesh/folders/{f}/feeds/notes/changes".into()),
        (Method::POST, "/mesh/folders/{f}/objects".into()),
        (Method::POST, "/mesh/folders/{f}/objects/missing".into()),
        (Method::POST, "/mesh/folders/{f}/objects/fetch".into()),
        (Method::GET, format!("/mesh/folders/{{f}}/objects/{hash}")),
        (Method::GET, format!("/mesh/folders/{{f}}/blobs/{hash}")),
        (Method::POST, "/mesh/invitations/{f}/accept".into()),
        (Method::POST, "/mesh/invitations/{f}/decline".into()),
    ];
    let mut differ = Vec::new();
    for (method, template) in &endpoints {
        let real = answer(
            &carol,
            method.clone(),
            &template.replace("{f}", "secret@ann"),
            "secret@ann",
        )
        .await;
        let none = answer(
            &carol,
            method.clone(),
            &template.replace("{f}", "nothere@ann"),
            "nothere@ann",
        )
        .await;
        if real != none {
            differ.push(format!("{method} {template}: {real:?} vs {none:?}"));
        }
    }
    // The sync protocol: pull, a feeds query naming the feed, and a push.
    let sync = hub.transport("carol", "carol-desk");
    let mut replica = Replica::new(MemoryStore::new("carol-desk".parse().unwrap()));
    let actor = Actor::new("carol".parse().unwrap(), "carol-desk".parse().unwrap());
    for folder in ["secret@ann", "nothere@ann"] {
        let feed = FeedKey::folder(folder.parse().unwrap(), "notes".parse().unwrap());
        replica
            .create(
                &feed,
                "n2".parse().unwrap(),
                EntryDraft::new("x", json!({})),
                &actor,
                Timestamp::from_unix(1_700_000_000).unwrap(),
            )
            .unwrap();
    }
    let mut sync_answers = Vec::new();
    for folder in ["secret@ann", "nothere@ann"] {
        let feed = FeedKey::folder(folder.parse().unwrap(), "notes".parse().unwrap());
        let entries = replica.store().list(&feed, None, 10).unwrap();
        let mut seen = Vec::new();
        for request in [
            Request::Pull {
                from: "carol-desk".parse().unwrap(),
                feed: feed.clone(),
                since: Cursor::ZERO,
                limit: 10,
            },
            Request::Feeds {
                from: "carol-desk".parse().unwrap(),
                only: Some(vec![feed.clone()]),
                certificates: false,
            },
            Request::Push {
                from: "carol-desk".parse().unwrap(),
                feed: feed.clone(),
                entries,
            },
        ] {
            let got = format!("{:?}", sync.send(request).await);
            seen.push(
                got.replace(folder, "F")
                    .replace(&hub.hub.replica_id().to_string(), "R"),
            );
        }
        sync_answers.push(seen);
    }
    // Founding: creating the folder through REST, and pushing a founding owner record.
    for folder in ["secret@ann", "nothere@ann"] {
        let mut seen = Vec::new();
        let (status, body) = carol
            .post("/mesh/folders", json!({"name": "mine", "id": folder}))
            .await;
        seen.push(format!(
            "{status} {}",
            body.to_string().replace(folder, "F")
        ));
        let members = FeedKey::members(&folder.parse().unwrap());
        replica
            .create(
                &members,
                "carol".parse().unwrap(),
                EntryDraft::new(
                    "carol",
                    json!({"user": "carol", "role": "owner", "state": "active",
                           "invited_by": "carol", "invited_at": "2023-11-14T22:13:20Z"}),
                ),
                &actor,
                Timestamp::from_unix(1_700_000_000).unwrap(),
            )
            .unwrap();
        let entries = replica.store().list(&members, None, 10).unwrap();
        let got = sync
            .send(Request::Push {
                from: "carol-desk".parse().unwrap(),
                feed: members,
                entries,
            })
            .await;
        seen.push(
            format!("{got:?}")
                .replace(folder, "F")
                .replace(&hub.hub.replica_id().to_string(), "R"),
        );
        sync_answers.push(seen);
    }
    // Her own folder she founds.
    let (status, _) = carol
        .post("/mesh/folders", json!({"name": "mine", "id": "mine@carol"}))
        .await;
    assert_eq!(status, 201);
    for (real, none) in sync_answers[2].iter().zip(&sync_answers[3]) {
        if real != none {
            differ.push(format!("founding: {real} vs {none}"));
        }
    }
    for (real, none) in sync_answers[0].iter().zip(&sync_answers[1]) {
        if real != none {
            differ.push(format!("sync: {real} vs {none}"));
        }
    }
    assert!(
        differ.is_empty(),
        "answers that tell:\n{}",
        differ.join("\n")
    );
    hub.stop().await;
}
