//! One conformance suite, run against every transport implementation.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork, Transport, TransportError};
use mesh_core::feedsync::MergeOutcome;
use mesh_core::id::ReplicaId;
use mesh_core::model::{EntryDraft, FeedKey};
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
    let net = SimNetwork::new(SimConfig {
        seed: 1,
        max_delay: Duration::from_millis(1),
        ..SimConfig::default()
    });
    suite(|u| Arc::new(net.wrap(hub.connect(u.parse().unwrap())).0)).await;
}
