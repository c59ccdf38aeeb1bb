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

/// Ann's feed's head, as the sync protocol tells her.
async fn head_seen(sync: &mesh_client::transport::HttpTransport, feed: &FeedKey) -> Cursor {
    let answer = sync
        .send(Request::Feeds {
            from: "ann-desk".parse().unwrap(),
            only: Some(vec![feed.clone()]),
            certificates: false,
        })
        .await
        .unwrap();
    match answer {
        mesh_core::sync::Response::Feeds { feeds, .. } => feeds[0].head,
        other => panic!("feeds answered {other:?}"),
    }
}

/// Positions are counted per feed and notification cursors are sealed: nothing a user is
/// shown (heads, pull cursors, notifications) moves with the writes of users whose folders
/// she cannot read. Under hub-wide numbering Ann's head jumped by Bob's 30 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_user_is_shown_does_not_move_with_other_users_writes() {
    let hub = TestHub::memory().await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let bob = Rest::new(&hub, hub.token("bob", "bob-phone"));
    for (who, f) in [(&ann, "a@ann"), (&bob, "b@bob")] {
        let (s, _) = who
            .post("/mesh/folders", json!({"name": "n", "id": f}))
            .await;
        assert_eq!(s, 201);
        who.post(
            &format!("/mesh/folders/{f}/feeds"),
            json!({"name": "notes"}),
        )
        .await;
    }
    let feed = FeedKey::folder("a@ann".parse().unwrap(), "notes".parse().unwrap());
    let sync = hub.transport("ann", "ann-desk");
    let write = |who: &Rest, folder: &str, id: String| {
        let req = who
            .req(
                Method::POST,
                &format!("/mesh/folders/{folder}/feeds/notes/entries"),
            )
            .json(&json!({"id": id, "title": "t", "content": {}}));
        async move { assert_eq!(crate::hubs::send(req).await.0, 201) }
    };
    write(&ann, "a@ann", "n1".into()).await;
    let h1 = head_seen(&sync, &feed).await;
    let (_, v) = ann.get("/mesh/notifications?wait=0").await;
    let c1 = v["cursor"].as_str().unwrap().to_owned();
    write(&ann, "a@ann", "n2".into()).await;
    let h2 = head_seen(&sync, &feed).await;
    assert_eq!(h2, Cursor(h1.0 + 1));
    let (_, v) = ann
        .get(&format!("/mesh/notifications?wait=0&cursor={c1}"))
        .await;
    assert_eq!(v["changes"][0]["head"], h2.0);
    let c2 = v["cursor"].as_str().unwrap().to_owned();

    for i in 0..30 {
        write(&bob, "b@bob", format!("b{i}")).await;
    }
    write(&ann, "a@ann", "n3".into()).await;
    let h3 = head_seen(&sync, &feed).await;
    assert_eq!(
        h3,
        Cursor(h2.0 + 1),
        "Bob's writes moved the head of Ann's feed"
    );
    let (_, v) = ann
        .get(&format!("/mesh/notifications?wait=0&cursor={c2}"))
        .await;
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "only Ann's own feed moved for her: {v}");
    assert_eq!(
        (
            changes[0]["feed"]["name"].as_str(),
            changes[0]["head"].as_u64()
        ),
        (Some("notes"), Some(h3.0))
    );
    let c3 = v["cursor"].as_str().unwrap();
    assert_ne!(c3, c2);
    let pulled = sync
        .send(Request::Pull {
            from: "ann-desk".parse().unwrap(),
            feed: feed.clone(),
            since: h2,
            limit: 10,
        })
        .await
        .unwrap();
    match pulled {
        mesh_core::sync::Response::Changes { entries, next, .. } => {
            assert_eq!(
                (entries.len(), next),
                (1, h3),
                "the pull cursor follows the feed"
            );
        }
        other => panic!("pull answered {other:?}"),
    }
    hub.stop().await;
}
