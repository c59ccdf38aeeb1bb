//! One conformance suite, run against every transport implementation.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork, Transport, TransportError};
use mesh_core::blob::ChunkHash;
use mesh_core::feedsync::MergeOutcome;
use mesh_core::id::{FolderId, ReplicaId};
use mesh_core::model::{EntryDraft, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{Cursor, MemoryStore};
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_core::ErrorCode;

use crate::common::*;

fn entries(user: &str, n: usize) -> (FeedKey, Vec<mesh_core::model::Entry>) {
    let feed = FeedKey::devices(&user.parse().unwrap());
    let mut r = Replica::new(MemoryStore::new("maker".parse().unwrap()));
    let actor = Actor::new(user.parse().unwrap(), "maker-device".parse().unwrap());
    for i in 0..n {
        r.create(
            &feed,
            format!("e{i}").parse().unwrap(),
            EntryDraft::new(format!("#{i}"), serde_json::json!(i)),
            &actor,
            Timestamp::EPOCH,
        )
        .unwrap();
    }
    let es = r
        .changes_since(&feed, Cursor::ZERO, 1000)
        .unwrap()
        .changes
        .into_iter()
        .map(|c| c.entry)
        .collect();
    (feed, es)
}

/// The suite: `connect(user)` gives a transport to one shared remote, acting for `user`.
pub(crate) async fn suite(connect: impl Fn(&str) -> Arc<dyn Transport>) {
    let ann = connect("ann");
    let from: ReplicaId = "device-1".parse().unwrap();
    let other: ReplicaId = "device-2".parse().unwrap();
    let Response::Feeds { feeds, .. } = ann
        .send(Request::Feeds {
            from: from.clone(),
            only: None,
            certificates: false,
        })
        .await
        .unwrap()
    else {
        panic!("feeds answer expected")
    };
    assert!(feeds.is_empty());

    // Notifications: subscribe before the push.
    let mut watch = ann.watch().await.unwrap();

    let (feed, es) = entries("ann", 5);
    let r = ann
        .send(Request::Push {
            from: from.clone(),
            feed: feed.clone(),
            entries: es.clone(),
        })
        .await
        .unwrap();
    let Response::Pushed { results, .. } = r else {
        panic!("pushed answer expected")
    };
    assert!(results
        .iter()
        .all(|r| r.outcome == MergeOutcome::Added && r.refused.is_none()));
    let n = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(n.feed, feed);

    // The pusher is not sent its own entries back; another replica gets them, in pages.
    let pull = |from: &ReplicaId, since: u64, limit: u32| Request::Pull {
        from: from.clone(),
        feed: feed.clone(),
        since: Cursor(since),
        limit,
    };
    let Response::Changes {
        entries: mine,
        more,
        ..
    } = ann.send(pull(&from, 0, 100)).await.unwrap()
    else {
        panic!()
    };
    assert!(mine.is_empty() && !more);
    let Response::Changes {
        entries: page,
        next,
        more,
        ..
    } = ann.send(pull(&other, 0, 3)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((page.len(), more), (3, true));
    let Response::Changes {
        entries: rest,
        more,
        ..
    } = ann.send(pull(&other, next.0, 3)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((rest.len(), more), (2, false));
    assert_eq!([page, rest].concat(), es);

    // Pushing the same again changes nothing.
    let Response::Pushed { results, .. } = ann
        .send(Request::Push {
            from: other.clone(),
            feed: feed.clone(),
            entries: es.clone(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(results.iter().all(|r| r.outcome == MergeOutcome::Unchanged));

    // Another user cannot see ann's mesh feeds, nor push into them.
    let bob = connect("bob");
    let Response::Feeds { feeds, .. } = bob
        .send(Request::Feeds {
            from: other.clone(),
            only: None,
            certificates: false,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(feeds.is_empty(), "bob sees {feeds:?}");
    match bob.send(pull(&other, 0, 10)).await {
        Err(TransportError::Remote(e)) => assert_eq!(e.code(), ErrorCode::NotFound),
        other => panic!("expected not found, got {other:?}"),
    }
    let Response::Pushed { results, .. } = bob
        .send(Request::Push {
            from: other.clone(),
            feed: feed.clone(),
            entries: entries("ann", 6).1,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(results.iter().all(|r| r.refused.is_some()), "{results:?}");

    // Malformed entries are typed errors, and nothing is merged.
    let mut bad = es[0].clone();
    bad.sync.history.clear();
    match ann
        .send(Request::Push {
            from,
            feed: feed.clone(),
            entries: vec![bad],
        })
        .await
    {
        Err(TransportError::Remote(e)) => assert_eq!(e.code(), ErrorCode::InvalidSync),
        other => panic!("expected invalid sync, got {other:?}"),
    }
    assert!(!ann.describe().is_empty());

    blobs(&connect).await;
}

/// Pushes `entries` as the transport's user; every one must be accepted.
async fn push_all(t: &Arc<dyn Transport>, feed: &FeedKey, entries: Vec<mesh_core::model::Entry>) {
    let Response::Pushed { results, .. } = t
        .send(Request::Push {
            from: "blob-maker".parse().unwrap(),
            feed: feed.clone(),
            entries,
        })
        .await
        .unwrap()
    else {
        panic!("pushed answer expected")
    };
    assert!(results.iter().all(|r| r.refused.is_none()), "{results:?}");
}

fn member(user: &str, role: Role, state: InvitationState) -> EntryDraft {
    let m = Member {
        user: user.parse().unwrap(),
        role,
        state,
        invited_by: "ann".parse().unwrap(),
        invited_at: Timestamp::EPOCH,
    };
    EntryDraft::new(user, serde_json::to_value(&m).unwrap())
}

/// Folders `blob-a` (ann owns it, bob reads it) and `blob-b` (ann alone), made through the
/// sync protocol as devices would.
async fn blob_folders(ann: &Arc<dyn Transport>, bob: &Arc<dyn Transport>) -> (FolderId, FolderId) {
    let (fa, fb): (FolderId, FolderId) =
        ("blob-a@ann".parse().unwrap(), "blob-b@ann".parse().unwrap());
    let mut maker = Replica::new(MemoryStore::new("blob-maker".parse().unwrap()));
    let ann_dev = Actor::new("ann".parse().unwrap(), "ann-device".parse().unwrap());
    let bob_dev = Actor::new("bob".parse().unwrap(), "bob-device".parse().unwrap());
    let t = |s: i64| Timestamp::from_unix(1_800_000_000 + s).unwrap();
    let owner = member("ann", Role::Owner, InvitationState::Active);
    for f in [&fa, &fb] {
        let w = maker
            .create(
                &FeedKey::members(f),
                "ann".parse().unwrap(),
                owner.clone(),
                &ann_dev,
                t(0),
            )
            .unwrap();
        push_all(ann, &FeedKey::members(f), vec![w.entry]).await;
    }
    let invited = member("bob", Role::Reader, InvitationState::Invited);
    let w = maker
        .create(
            &FeedKey::members(&fa),
            "bob".parse().unwrap(),
            invited,
            &ann_dev,
            t(1),
        )
        .unwrap();
    push_all(ann, &FeedKey::members(&fa), vec![w.entry]).await;
    let accepted = member("bob", Role::Reader, InvitationState::Active);
    let w = maker
        .update(
            &FeedKey::members(&fa),
            &"bob".parse().unwrap(),
            accepted,
            &bob_dev,
            t(2),
        )
        .unwrap();
    push_all(bob, &FeedKey::members(&fa), vec![w.entry]).await;
    (fa, fb)
}

/// Refused for the role: `Forbidden` over HTTP, `permission_denied` in process.
fn is_denied(e: &TransportError) -> bool {
    match e {
        TransportError::Forbidden(_) => true,
        TransportError::Remote(c) => c.code() == ErrorCode::PermissionDenied,
        _ => false,
    }
}

fn is_not_found(e: &TransportError) -> bool {
    matches!(e, TransportError::Remote(c) if c.code() == ErrorCode::NotFound)
}

fn object(tag: &str, len: usize) -> (ChunkHash, Vec<u8>) {
    let data: Vec<u8> = tag.bytes().cycle().take(len).collect();
    (ChunkHash::of(&data), data)
}

/// The blob calls: what the remote lacks, upload (checked, deduplicated), download (a prefix
/// at a time), member roles, and folders that never see each other's objects.
async fn blobs(connect: &impl Fn(&str) -> Arc<dyn Transport>) {
    let (ann, bob, carol) = (connect("ann"), connect("bob"), connect("carol"));
    let (fa, fb) = blob_folders(&ann, &bob).await;
    let objs: Vec<_> = (0..3)
        .map(|i| object(&format!("object {i}"), 1000 + i))
        .collect();
    let hashes: Vec<ChunkHash> = objs.iter().map(|o| o.0).collect();

    // Nothing yet; an empty question is an empty answer.
    assert_eq!(ann.missing_objects(&fa, &hashes).await.unwrap(), hashes);
    assert!(ann.missing_objects(&fa, &[]).await.unwrap().is_empty());
    assert!(ann.get_objects(&fa, &hashes).await.unwrap().is_empty());

    // Upload two, then all three (the first two again: deduplicated, not an error).
    ann.put_objects(&fa, objs[..2].to_vec()).await.unwrap();
    assert_eq!(
        ann.missing_objects(&fa, &hashes).await.unwrap(),
        vec![hashes[2]]
    );
    ann.put_objects(&fa, objs.clone()).await.unwrap();
    ann.put_objects(&fa, objs.clone()).await.unwrap();
    assert!(ann.missing_objects(&fa, &hashes).await.unwrap().is_empty());
    ann.put_objects(&fa, Vec::new()).await.unwrap();

    // Download: in the order asked, unknown hashes left out.
    let unknown = ChunkHash::of(b"never uploaded");
    let got = ann
        .get_objects(&fa, &[hashes[2], unknown, hashes[0]])
        .await
        .unwrap();
    assert_eq!(got, vec![objs[2].clone(), objs[0].clone()]);

    // A forged object fails the whole upload, and nothing of it is kept.
    let good = object("good", 10);
    let forged = (ChunkHash::of(b"what it claims"), b"what it is".to_vec());
    match ann.put_objects(&fa, vec![good.clone(), forged]).await {
        Err(TransportError::Remote(e)) => assert_eq!(e.code(), ErrorCode::InvalidBlob),
        other => panic!("expected invalid_blob, got {other:?}"),
    }
    assert_eq!(
        ann.missing_objects(&fa, &[good.0]).await.unwrap(),
        vec![good.0]
    );

    // A reader queries and downloads, but may not upload.
    assert!(bob.missing_objects(&fa, &hashes).await.unwrap().is_empty());
    assert_eq!(bob.get_objects(&fa, &hashes).await.unwrap(), objs);
    let e = bob.put_objects(&fa, vec![good.clone()]).await.unwrap_err();
    assert!(is_denied(&e), "a reader uploading: {e:?}");
    assert_eq!(
        ann.missing_objects(&fa, &[good.0]).await.unwrap(),
        vec![good.0]
    );

    // A non-member is told the folder does not exist, whatever the call.
    for f in [&fa, &"no-such-folder".parse().unwrap()] {
        let e = carol.missing_objects(f, &hashes).await.unwrap_err();
        assert!(is_not_found(&e), "{e:?}");
        let e = carol.get_objects(f, &hashes).await.unwrap_err();
        assert!(is_not_found(&e), "{e:?}");
        let e = carol.put_objects(f, vec![good.clone()]).await.unwrap_err();
        assert!(is_not_found(&e), "{e:?}");
    }
    // Bob belongs to A only.
    let e = bob.get_objects(&fb, &hashes).await.unwrap_err();
    assert!(is_not_found(&e), "{e:?}");

    // Objects claimed by folder B only are never served for folder A, even to a member of
    // both, and even though the remote stores their bytes: A must upload them itself.
    let secret = object("only in B", 500);
    ann.put_objects(&fb, vec![secret.clone()]).await.unwrap();
    assert_eq!(ann.missing_objects(&fb, &[secret.0]).await.unwrap(), vec![]);
    assert_eq!(
        ann.missing_objects(&fa, &[secret.0]).await.unwrap(),
        vec![secret.0]
    );
    assert!(ann.get_objects(&fa, &[secret.0]).await.unwrap().is_empty());
    assert!(bob.get_objects(&fa, &[secret.0, hashes[0]]).await.unwrap() == vec![objs[0].clone()]);
    assert_eq!(
        ann.get_objects(&fb, &[secret.0]).await.unwrap(),
        vec![secret]
    );
    // ... and B sees nothing of A's.
    assert_eq!(ann.missing_objects(&fb, &hashes).await.unwrap(), hashes);

    // Long lists (more than one HTTP request's worth of hashes) keep their order.
    let many: Vec<ChunkHash> = (0..70_000u32)
        .map(|i| ChunkHash::of(&i.to_be_bytes()))
        .collect();
    let mut asked = many.clone();
    asked.insert(40_000, hashes[1]);
    assert_eq!(ann.missing_objects(&fa, &asked).await.unwrap(), many);

    // Large downloads come a prefix at a time; asking again for the rest completes them.
    let big: Vec<_> = (0..3)
        .map(|i| object(&format!("big {i}"), 4 << 20))
        .collect();
    for o in &big {
        ann.put_objects(&fa, vec![o.clone()]).await.unwrap();
    }
    let want: Vec<ChunkHash> = big.iter().map(|o| o.0).collect();
    let first = ann.get_objects(&fa, &want).await.unwrap();
    assert!(
        !first.is_empty() && first.len() < big.len(),
        "{} objects in one answer",
        first.len()
    );
    assert_eq!(first[..], big[..first.len()]);
    let rest = ann.get_objects(&fa, &want[first.len()..]).await.unwrap();
    assert_eq!([first, rest].concat()[..], big[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_hub_passes_the_suite() {
    let hub = InProcessHub::new();
    suite(|u| Arc::new(hub.connect(u.parse().unwrap()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_served_directly_passes_the_suite() {
    let host = builder("host", "host-device").build().await.unwrap();
    suite(|u| Arc::new(host.serve(u.parse().unwrap()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_network_without_faults_passes_the_suite() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(
        SimConfig::default()
            .with_seed(1)
            .with_max_delay(Duration::from_millis(1)),
    );
    suite(|u| Arc::new(net.wrap(hub.connect(u.parse().unwrap())).0)).await;
}
