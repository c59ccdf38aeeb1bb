//! Convergence of several clients over the simulated network under random faults.

use std::time::Duration;

use mesh_client::transport::{InProcessHub, LinkControl, SimConfig, SimNetwork};
use mesh_client::{MeshClient, SyncOptions};
use mesh_core::id::{EntryId, FeedName, FolderId};
use mesh_core::model::{EntryDraft, Query};
use proptest::prelude::*;

use crate::common::*;

#[derive(Debug, Clone)]
enum Op {
    Put { client: usize, id: u8, value: u8 },
    Delete { client: usize, id: u8 },
    Link { client: usize, online: bool },
    Sync { client: usize },
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n, 0u8..6, any::<u8>()).prop_map(|(client, id, value)| Op::Put { client, id, value }),
        1 => (0..n, 0u8..6).prop_map(|(client, id)| Op::Delete { client, id }),
        1 => (0..n, any::<bool>()).prop_map(|(client, online)| Op::Link { client, online }),
        3 => (0..n).prop_map(|client| Op::Sync { client }),
    ]
}

async fn run(seed: u64, ops: Vec<Op>, n: usize) {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(
        SimConfig::default()
            .with_seed(seed)
            .with_drop_request(0.1)
            .with_drop_response(0.1)
            .with_duplicate(0.1)
            .with_replay(0.1)
            .with_max_delay(Duration::from_millis(20)),
    );
    let mut clients: Vec<MeshClient> = Vec::new();
    let mut links: Vec<LinkControl> = Vec::new();
    for i in 0..n {
        let (t, link) = net.wrap(hub.connect("ann".parse().unwrap()));
        let c = builder("ann", &format!("dev{i}"))
            .remote("hub".parse().unwrap(), t)
            .sync_options(SyncOptions::default().with_page_size(3))
            .build()
            .await
            .unwrap();
        clients.push(c);
        links.push(link);
    }
    let folder: FolderId = clients[0]
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap()
        .id;
    let feed: FeedName = clients[0]
        .create_feed(&folder, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    // Everyone gets the folder before the random part (retrying through the faults).
    for _ in 0..50 {
        for c in &clients {
            let _ = c.sync_now().await;
        }
        let mut ready = true;
        for c in &clients {
            ready &= c.role(&folder).await.unwrap().is_some()
                && !c.feeds(&folder).await.unwrap_or_default().is_empty();
        }
        if ready {
            break;
        }
    }
    let mut written = Vec::new();
    for o in ops {
        match o {
            Op::Put { client, id, value } => {
                let id: EntryId = format!("e{id}").parse().unwrap();
                let draft = EntryDraft::new(format!("{value}"), serde_json::json!(value));
                if let Ok(e) = clients[client].put_with_id(&folder, &feed, id, draft).await {
                    written.push(e);
                }
            }
            Op::Delete { client, id } => {
                let _ = clients[client]
                    .delete(&folder, &feed, &format!("e{id}").parse().unwrap())
                    .await;
            }
            Op::Link { client, online } => links[client].set_online(online),
            Op::Sync { client } => {
                let _ = clients[client].sync_now().await;
            }
        }
    }
    // Heal, then sync until every client has the same entries.
    for l in &links {
        l.set_online(true);
    }
    let snapshot = |c: &MeshClient| {
        let c = c.clone();
        let (folder, feed) = (folder.clone(), feed.clone());
        async move {
            let mut q = Query::new();
            q.include_deleted = true;
            c.query(&folder, &feed, q).await.unwrap()
        }
    };
    let mut converged = false;
    for _ in 0..200 {
        for c in &clients {
            let _ = c.sync_now().await;
        }
        let first = snapshot(&clients[0]).await;
        let mut same = true;
        for c in &clients[1..] {
            same &= snapshot(c).await == first;
        }
        if same && hub.inspect(|_| true) {
            converged = true;
            break;
        }
    }
    assert!(converged, "clients did not converge");
    // No acknowledged write is lost: each is the winner, a conflict, or known by one of them.
    let finals = snapshot(&clients[0]).await;
    for w in written {
        let e = finals
            .iter()
            .find(|e| e.sync.id == w.sync.id)
            .expect("entry present");
        let known = std::iter::once(&e.sync)
            .chain(e.conflicts.iter().map(|c| &c.sync))
            .any(|s| s.knows(&w.sync));
        assert!(known, "write {:?} lost", w.sync.topmost());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn clients_converge_over_a_faulty_network(seed in any::<u64>(), ops in proptest::collection::vec(op(3), 5..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(run(seed, ops, 3));
    }
}
