//! End to end through the umbrella crate: three replicas in a ring converge.

use mesh::core::model::{EntryDraft, FeedKey};
use mesh::core::replica::{Actor, Replica};
use mesh::core::store::{MemoryStore, Store};
use mesh::core::sync::{respond, SessionConfig, Step, SyncSession};
use mesh::core::time::Timestamp;

type R = Replica<MemoryStore>;

fn sync(local: &mut R, remote: &mut R, name: &str) -> usize {
    let mut s = SyncSession::new(SessionConfig::new(name.parse().unwrap()));
    loop {
        match s.poll(local).unwrap() {
            Step::Send(req) => {
                let resp = respond(remote, req).unwrap();
                s.receive(local, resp).unwrap();
            }
            Step::Done(r) => return r.received + r.sent,
        }
    }
}

#[test]
fn three_devices_in_a_ring_converge() {
    let feed: FeedKey = "folder:shared/notes".parse().unwrap();
    let names = ["a", "b", "c"];
    let mut rs: Vec<R> = names
        .iter()
        .map(|n| Replica::new(MemoryStore::new(n.parse().unwrap())))
        .collect();
    let t0 = Timestamp::from_unix(1_800_000_000).unwrap();
    for (i, r) in rs.iter_mut().enumerate() {
        let me = Actor::new("ann".parse().unwrap(), names[i].parse().unwrap());
        for k in 0..20 {
            let draft = EntryDraft::new(format!("{}-{k}", names[i]), serde_json::json!(k));
            r.create(
                &feed,
                format!("{}{k}", names[i]).parse().unwrap(),
                draft,
                &me,
                t0,
            )
            .unwrap();
        }
        // Everyone also edits one shared entry id, created independently: a conflict.
        let draft = EntryDraft::new(format!("shared by {}", names[i]), serde_json::json!(i));
        r.create(
            &feed,
            "shared".parse().unwrap(),
            draft,
            &me,
            t0.plus_secs(i as i64),
        )
        .unwrap();
    }
    // Ring a -> b -> c -> a until a full round moves nothing.
    for round in 0..10 {
        let mut moved = 0;
        for i in 0..3 {
            let j = (i + 1) % 3;
            let (left, right) = rs.split_at_mut(j.max(i));
            let (x, y) = if i < j {
                (&mut left[i], &mut right[0])
            } else {
                (&mut right[0], &mut left[j])
            };
            moved += sync(x, y, names[j]);
        }
        if moved == 0 {
            assert!(round > 0);
            break;
        }
    }
    let lists: Vec<_> = rs
        .iter()
        .map(|r| r.store().list(&feed, None, 1000).unwrap())
        .collect();
    assert_eq!(lists[0].len(), 61);
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
    let shared = lists[0]
        .iter()
        .find(|e| e.sync.id.as_str() == "shared")
        .unwrap();
    assert_eq!(shared.content.title, "shared by c", "latest `when` wins");
    assert_eq!(shared.conflicts.len(), 2);
}
