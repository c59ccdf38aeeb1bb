//! A hub's work under a folder's lock for pushed pages, on a file-backed SQLite replica:
//! `guard::push` of 20 pages of 500 new entries (about 1 KiB of content each) into a folder's
//! feed, as the hub judges and merges a large push once it holds the folder's lock.
//!
//! * `hub_push_10k/json_made_ahead`: each entry's JSON is made before the page is pushed
//!   (`Incoming::encoded`, untimed, as the hub does on another thread before taking the lock);
//!   the store writes it as it is.
//! * `hub_push_10k/encoded_under_the_lock`: plain entries; the store encodes each one.
//!
//! Signatures are not checked (`NoKeyring`: every writer is outside the mesh), so that the
//! figure is the merge and write path. Making the store, founding the folder and building the
//! entries are setup and not timed. The first page of every sample is checked to be added.
//!
//! ```text
//! cargo bench -p mesh-store --bench push
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use mesh_core::content::JsonContent;
use mesh_core::feedsync::MergeOutcome;
use mesh_core::id::{FolderId, UserId};
use mesh_core::model::{Entry, EntryDraft, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{Cursor, Incoming, MemoryStore};
use mesh_core::sync::guard::{self, Pusher};
use mesh_core::time::Timestamp;
use mesh_core::trust::NoKeyring;
use mesh_store::SqliteStore;

/// Entries per page, as a device pushes them.
const PAGE: usize = 500;
/// Pages per sample.
const PAGES: usize = 20;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix(1_700_000_000 + secs).unwrap()
}

fn folder() -> FolderId {
    "bench@ann".parse().unwrap()
}

/// Everything a device of ann's made: the folder's owner record, and `n` entries of its
/// `items` feed with time-ordered ids, as the device's change log lists them.
fn written(n: usize) -> (Vec<Entry>, Vec<Entry>) {
    let mut dev = Replica::new(MemoryStore::new("ann-dev".parse().unwrap()));
    let ann = Actor::new("ann".parse().unwrap(), "ann-dev".parse().unwrap());
    let members = FeedKey::members(&folder());
    let owner = Member {
        user: "ann".parse().unwrap(),
        role: Role::Owner,
        state: InvitationState::Active,
        invited_by: "ann".parse().unwrap(),
        invited_at: t(0),
    };
    let draft = EntryDraft {
        title: "ann".into(),
        content: JsonContent::from_serialize(&owner).unwrap(),
        media: None,
    };
    dev.create(&members, "ann".parse().unwrap(), draft, &ann, t(0))
        .unwrap();
    let items = items();
    for i in 0..n {
        let content = serde_json::json!({ "n": i, "text": "x".repeat(1000) });
        let draft = EntryDraft::new(format!("item {i}"), content);
        let id = format!("0190{i:012x}").parse().unwrap();
        dev.create(&items, id, draft, &ann, t(1)).unwrap();
    }
    let all = |feed: &FeedKey| -> Vec<Entry> {
        dev.changes_since(feed, Cursor::ZERO, n + 1)
            .unwrap()
            .changes
            .into_iter()
            .map(|c| c.entry)
            .collect()
    };
    (all(&members), all(&items))
}

fn items() -> FeedKey {
    FeedKey::folder(folder(), "items".parse().unwrap())
}

/// A hub's replica in `dir`, with the folder founded.
fn hub(dir: &std::path::Path, founding: &[Entry]) -> Replica<SqliteStore> {
    let store = SqliteStore::open(dir.join("hub.db"), "hub".parse().unwrap()).unwrap();
    let mut hub = Replica::new(store);
    let ann: UserId = "ann".parse().unwrap();
    let from = "ann-dev".parse().unwrap();
    let members = FeedKey::members(&folder());
    let judged = guard::push(
        &mut hub,
        Pusher::new(&ann, &NoKeyring),
        Some(&from),
        &members,
        founding.to_vec(),
    )
    .unwrap();
    assert!(judged.iter().all(|j| j.refused.is_none()), "{judged:?}");
    hub
}

/// Pushes every page; checks the first.
fn push_all<E: Into<Incoming>>(hub: &mut Replica<SqliteStore>, pages: Vec<Vec<E>>) {
    let ann: UserId = "ann".parse().unwrap();
    let from = "ann-dev".parse().unwrap();
    for (n, page) in pages.into_iter().enumerate() {
        let pusher = Pusher::new(&ann, &NoKeyring);
        let judged = guard::push(hub, pusher, Some(&from), &items(), page).unwrap();
        if n == 0 {
            assert!(judged
                .iter()
                .all(|j| j.refused.is_none() && j.outcome == MergeOutcome::Added));
        }
        black_box(judged);
    }
}

fn bench(c: &mut Criterion) {
    let (founding, entries) = written(PAGE * PAGES);
    let pages: Vec<Vec<Entry>> = entries.chunks(PAGE).map(<[Entry]>::to_vec).collect();
    let mut g = c.benchmark_group("hub_push_10k");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements((PAGE * PAGES) as u64));
    g.bench_function("json_made_ahead", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let hub = hub(dir.path(), &founding);
                let pages: Vec<Vec<Incoming>> = pages
                    .iter()
                    .map(|p| {
                        p.iter()
                            .map(|e| Incoming::encoded(e.clone()).unwrap())
                            .collect()
                    })
                    .collect();
                (dir, hub, pages)
            },
            |(dir, mut hub, pages)| {
                push_all(&mut hub, pages);
                (dir, hub)
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("encoded_under_the_lock", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let hub = hub(dir.path(), &founding);
                (dir, hub, pages.clone())
            },
            |(dir, mut hub, pages)| {
                push_all(&mut hub, pages);
                (dir, hub)
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
