//! Criterion benchmarks of mesh-core: merge throughput and change-log reads of a
//! `Replica<MemoryStore>`. See `docs/benchmarks.md` for how to run them and the results.
//!
//! * `merge_100k_1KiB/*`: 100,000 entries with 1 KiB of JSON content each, merged through
//!   [`Replica::merge_batch`] in batches of 1,000 (100 transactions per iteration). Building
//!   the replica and the incoming entries is setup and is not timed; dropping the results is
//!   not timed either. Throughput is in entries (merges) per second.
//! * `changes_since_1M/*`: one `changes_since(cursor, 10)` call on a feed whose change log
//!   holds 1,000,000 entries.
//!
//! * `feeds_answer_10k/*`: answering a `feeds` request on a replica holding 10,000 feeds of
//!   one entry each (a hub serving many users), for a peer asking about one feed by name and
//!   for one asking about every feed; and a hub answering a user who asks about every feed
//!   they may read, on a replica of 5,000 folders of two feeds, one of them theirs.
//!
//! Every scenario is run once outside the timed loop and its outcomes are checked, so the
//! timed loop measures the work the scenario names.

use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use mesh_core::feedsync::MergeOutcome;
use mesh_core::model::{Entry, EntryDraft, FeedKey};
use mesh_core::replica::{Actor, MergeReport, Replica};
use mesh_core::store::{Cursor, MemoryStore, Store};

mod fixtures;
use fixtures::{batches, created, feed, updated};

/// Entries per merge benchmark.
const N: usize = 100_000;
/// Bytes of JSON content per entry.
const CONTENT: usize = 1024;
/// Entries per `merge_batch` call.
const BATCH: usize = 1_000;

fn empty_replica() -> Replica<MemoryStore> {
    Replica::new(MemoryStore::new("bench-replica".parse().unwrap()))
}

/// Merges every batch; returns the reports of all of them.
fn merge_all(
    replica: &mut Replica<MemoryStore>,
    feed: &FeedKey,
    batches: Vec<Vec<Entry>>,
) -> Vec<Vec<MergeReport>> {
    batches
        .into_iter()
        .map(|b| replica.merge_batch(feed, b, None).unwrap())
        .collect()
}

/// A replica holding `entries` (merged in batches).
fn replica_with(feed: &FeedKey, entries: &[Entry]) -> Replica<MemoryStore> {
    let mut r = empty_replica();
    merge_all(&mut r, feed, batches(entries, BATCH));
    assert_eq!(r.store().len(), entries.len());
    r
}

/// Asserts that every report has outcome `want` (and a sequence number exactly when the entry
/// changed).
fn check(reports: &[Vec<MergeReport>], want: MergeOutcome) {
    let mut n = 0;
    for r in reports.iter().flatten() {
        assert_eq!(r.outcome, want, "entry {}", r.id);
        assert_eq!(r.seq.is_some(), want.changed());
        n += 1;
    }
    assert_eq!(n, N);
}

/// The entries the merge benchmarks send; built on first use, so that a filtered run builds
/// only what it needs.
struct MergeData {
    /// Version 1 of every entry, created on device A.
    base: Vec<Entry>,
    /// Version 2, written on device A.
    on_a: Vec<Entry>,
    /// Version 2, written concurrently on device B.
    on_b: Vec<Entry>,
}

impl MergeData {
    fn new() -> Self {
        let base = created(N, CONTENT, "device-a");
        let on_a = updated(&base, "device-a", 10, CONTENT);
        let on_b = updated(&base, "device-b", 11, CONTENT);
        MergeData { base, on_a, on_b }
    }
}

/// One of the [`MergeData`] sets.
#[derive(Clone, Copy)]
enum Which {
    Base,
    OnA,
}

impl Which {
    fn of(self, d: &MergeData) -> &[Entry] {
        match self {
            Which::Base => &d.base,
            Which::OnA => &d.on_a,
        }
    }
}

fn merge_benches(c: &mut Criterion) {
    let feed = feed();
    let data = OnceCell::new();
    let data = || data.get_or_init(MergeData::new);

    let mut g = c.benchmark_group("merge_100k_1KiB");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(N as u64));

    // Fresh inserts: every entry is new to an empty replica.
    let mut checked = false;
    g.bench_function("fresh_inserts", |b| {
        let d = data();
        if !std::mem::replace(&mut checked, true) {
            let mut r = empty_replica();
            check(
                &merge_all(&mut r, &feed, batches(&d.base, BATCH)),
                MergeOutcome::Added,
            );
            assert_eq!(r.store().len(), N);
            assert_eq!(r.store().head(&feed).unwrap(), Cursor(N as u64));
        }
        b.iter_batched(
            || (empty_replica(), batches(&d.base, BATCH)),
            |(mut r, input)| {
                let reports = merge_all(&mut r, &feed, input);
                // Returned so that dropping the replica and reports is not timed.
                (r, reports)
            },
            BatchSize::PerIteration,
        )
    });

    // No-ops. Nothing changes, so one replica serves every iteration; afterwards the outcomes
    // are checked and the head must not have moved.
    for (name, held, sent) in [
        // The replica already holds exactly the versions sent.
        ("noop_same_versions", Which::Base, Which::Base),
        // The replica holds version 2 (from A); version 1 is sent.
        ("noop_older_versions", Which::OnA, Which::Base),
    ] {
        let mut replica: Option<(Replica<MemoryStore>, Cursor)> = None;
        g.bench_function(name, |b| {
            let d = data();
            let (held, sent) = (held.of(d), sent.of(d));
            let (r, _) = replica.get_or_insert_with(|| {
                let r = replica_with(&feed, held);
                let head = r.store().head(&feed).unwrap();
                (r, head)
            });
            b.iter_batched(
                || batches(sent, BATCH),
                |input| merge_all(r, &feed, input),
                BatchSize::PerIteration,
            )
        });
        if let Some((mut r, head)) = replica {
            let sent = sent.of(data());
            check(
                &merge_all(&mut r, &feed, batches(sent, BATCH)),
                MergeOutcome::Unchanged,
            );
            assert_eq!(r.store().head(&feed).unwrap(), head);
        }
    }

    // Conflicts: the replica holds A's version 2; B's concurrent version 2 arrives. B wins (same
    // `updates`, later `when`) and A's version becomes its conflict.
    let mut checked = false;
    g.bench_function("all_conflicting", |b| {
        let d = data();
        if !std::mem::replace(&mut checked, true) {
            let mut r = replica_with(&feed, &d.on_a);
            check(
                &merge_all(&mut r, &feed, batches(&d.on_b, BATCH)),
                MergeOutcome::Conflict,
            );
            let e = r.get(&feed, d.on_b[0].id()).unwrap().unwrap();
            assert_eq!(e.content, d.on_b[0].content);
            assert_eq!(e.conflicts.len(), 1);
            assert_eq!(e.conflicts[0].content, d.on_a[0].content);
        }
        b.iter_batched(
            || (replica_with(&feed, &d.on_a), batches(&d.on_b, BATCH)),
            |(mut r, input)| {
                let reports = merge_all(&mut r, &feed, input);
                (r, reports)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Entries in the change-log benchmark's feed.
const LOG_N: usize = 1_000_000;
/// Changes asked for per call.
const LIMIT: usize = 10;

/// A replica with one feed of `LOG_N` entries written locally, one change each (1 KiB content
/// each, as in the merge benchmarks; a returned change shares its content by reference).
fn big_log(feed: &FeedKey) -> Replica<MemoryStore> {
    let mut r = empty_replica();
    let actor = Actor::new("ann".parse().unwrap(), fixtures::device("device-a"));
    for i in 0..LOG_N {
        let draft = EntryDraft {
            title: format!("item {i}"),
            content: fixtures::content(i, 1, CONTENT),
            media: None,
        };
        r.create(feed, fixtures::entry_id(i), draft, &actor, fixtures::at(0))
            .unwrap();
    }
    assert_eq!(r.store().head(feed).unwrap(), Cursor(LOG_N as u64));
    r
}

fn changes_since_benches(c: &mut Criterion) {
    let feed = feed();
    let log = OnceCell::new();

    let mut g = c.benchmark_group("changes_since_1M");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, since, more) in [
        ("middle", Cursor(LOG_N as u64 / 2), true),
        ("near_end", Cursor((LOG_N - LIMIT) as u64), false),
    ] {
        g.bench_function(name, |b| {
            let r = log.get_or_init(|| big_log(&feed));
            let page = r.changes_since(&feed, since, LIMIT).unwrap();
            assert_eq!(page.changes.len(), LIMIT);
            assert_eq!(page.changes[0].seq, Cursor(since.0 + 1));
            assert_eq!(page.next, Cursor(since.0 + LIMIT as u64));
            assert_eq!(page.more, more);
            b.iter(|| r.changes_since(&feed, black_box(since), LIMIT).unwrap())
        });
    }
    g.finish();
}

/// Feeds held by the replica of the `feeds_answer_10k` benchmarks.
const FEEDS_N: usize = 10_000;

fn feeds_answer_benches(c: &mut Criterion) {
    use mesh_core::sync::{respond, Request, Response};
    let key = |i: usize| -> FeedKey { format!("folder:f{i}/todos").parse().unwrap() };
    let hub = OnceCell::new();
    let ask = |only: Option<Vec<FeedKey>>| Request::Feeds {
        from: "peer".parse().unwrap(),
        only,
        certificates: false,
    };

    let mut g = c.benchmark_group("feeds_answer_10k");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, only, want) in [
        ("one_by_name", Some(vec![key(FEEDS_N / 2)]), 1),
        ("every_feed", None, FEEDS_N),
    ] {
        g.bench_function(name, |b| {
            let hub = hub.get_or_init(|| {
                let mut r = empty_replica();
                let actor = Actor::new("ann".parse().unwrap(), fixtures::device("device-a"));
                for i in 0..FEEDS_N {
                    let draft = EntryDraft::new("item", serde_json::json!({ "i": i }));
                    r.create(
                        &key(i),
                        fixtures::entry_id(0),
                        draft,
                        &actor,
                        fixtures::at(0),
                    )
                    .unwrap();
                }
                std::cell::RefCell::new(r)
            });
            let answer =
                |only: Option<Vec<FeedKey>>| match respond(&mut hub.borrow_mut(), ask(only))
                    .unwrap()
                {
                    Response::Feeds { feeds, .. } => feeds.len(),
                    other => panic!("{other:?}"),
                };
            assert_eq!(answer(only.clone()), want);
            b.iter(|| answer(black_box(only.clone())))
        });
    }
    // A hub's answer to a user who asks about every feed: only their own folders' feeds are
    // gone through (the store's index of member records finds them), however many folders
    // the hub holds.
    g.bench_function("every_readable_feed_as_a_user", |b| {
        use mesh_core::content::JsonContent;
        use mesh_core::model::{InvitationState, Member, Role};
        use mesh_core::sync::guard::Pusher;
        use mesh_core::sync::respond_as;
        use mesh_core::trust::NoKeyring;
        let mut r = empty_replica();
        let actor = Actor::new("ann".parse().unwrap(), fixtures::device("device-a"));
        for i in 0..FEEDS_N / 2 {
            let folder: mesh_core::id::FolderId = format!("f{i}@u{i}").parse().unwrap();
            let user: mesh_core::id::UserId = format!("u{i}").parse().unwrap();
            let member = Member {
                user: user.clone(),
                role: Role::Owner,
                state: InvitationState::Active,
                invited_by: user.clone(),
                invited_at: fixtures::at(0),
            };
            let draft = EntryDraft {
                title: user.to_string(),
                content: JsonContent::from_serialize(&member).unwrap(),
                media: None,
            };
            let id = user.as_str().parse().unwrap();
            r.create(
                &FeedKey::members(&folder),
                id,
                draft,
                &actor,
                fixtures::at(0),
            )
            .unwrap();
            let todos = FeedKey::folder(folder, "todos".parse().unwrap());
            let draft = EntryDraft::new("item", serde_json::json!({ "i": i }));
            r.create(
                &todos,
                fixtures::entry_id(0),
                draft,
                &actor,
                fixtures::at(0),
            )
            .unwrap();
        }
        let user: mesh_core::id::UserId = "u7".parse().unwrap();
        let mut answer = || match respond_as(&mut r, Pusher::new(&user, &NoKeyring), ask(None)) {
            Ok(Response::Feeds { feeds, .. }) => feeds.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(answer(), 2);
        b.iter(&mut answer)
    });
    g.finish();
}

/// The cost of trust: signing one write, and verifying entries the way a hub checks a pushed
/// page (one entry alone, and a page of 500 new entries of 1 KiB).
fn trust_benches(c: &mut Criterion) {
    use mesh_core::time::Timestamp;
    use mesh_core::trust::{
        seal_version, verify_entries, verify_entry, DeviceCertificate, MemoryKeyring, SecretKey,
    };
    let feed = feed();
    let key = SecretKey::from_seed([7; 32]);
    let authority = SecretKey::from_seed([8; 32]);
    let t = Timestamp::from_unix(1_700_000_000).unwrap();
    let mut ring = MemoryKeyring::new(authority.public());
    ring.add(DeviceCertificate::issue(
        &authority,
        "ann".parse().unwrap(),
        "laptop".parse().unwrap(),
        key.public(),
        t,
        t.plus_secs(86_400),
    ))
    .unwrap();
    let mut signer = empty_replica();
    signer.set_signer(key.clone());
    let actor = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
    let page: Vec<Entry> = (0..500)
        .map(|i| {
            let draft = EntryDraft {
                title: format!("item {i}"),
                content: fixtures::content(i, 1, 1024),
                media: None,
            };
            signer
                .create(&feed, fixtures::entry_id(i), draft, &actor, t)
                .unwrap()
                .entry
        })
        .collect();
    let mut g = c.benchmark_group("trust_1KiB");
    g.bench_function("sign_one_write", |b| {
        let e = page[0].clone();
        b.iter_batched(
            || e.clone(),
            |mut e| {
                let del = e.sync.deleted;
                seal_version(
                    &feed,
                    &e.sync.id,
                    &mut e.sync.history,
                    del,
                    &e.content,
                    &key,
                );
                e
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify_one_entry", |b| {
        b.iter(|| verify_entry(&ring, &feed, None, black_box(&page[0])).unwrap())
    });
    g.throughput(Throughput::Elements(page.len() as u64));
    g.bench_function("verify_page_of_500", |b| {
        b.iter(|| {
            for e in &page {
                verify_entry(&ring, &feed, None, black_box(e)).unwrap();
            }
        })
    });
    // The same page checked as a push is: its signatures in one batch, on one thread.
    let pairs: Vec<(Option<&Entry>, &Entry)> = page.iter().map(|e| (None, e)).collect();
    g.bench_function("verify_page_of_500_batched", |b| {
        b.iter(|| {
            for r in verify_entries(&ring, &feed, black_box(&pairs), 1) {
                r.unwrap();
            }
        })
    });
    // The same page with one forged signature: the combined check fails and the batch
    // checks each signature alone to find it (what a hostile pusher can make it cost).
    let mut forged = page.clone();
    if let Some(seal) = forged[250].sync.history[0].seal.as_mut() {
        seal.sig.0[40] ^= 0x10;
    }
    let forged_pairs: Vec<(Option<&Entry>, &Entry)> = forged.iter().map(|e| (None, e)).collect();
    g.bench_function("verify_page_of_500_batched_one_forged", |b| {
        b.iter(|| {
            let refused = verify_entries(&ring, &feed, black_box(&forged_pairs), 1)
                .iter()
                .filter(|r| r.is_err())
                .count();
            assert_eq!(refused, 1);
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    merge_benches(&mut c);
    changes_since_benches(&mut c);
    feeds_answer_benches(&mut c);
    trust_benches(&mut c);
    c.final_summary();
}
