//! Property tests of the FeedSync engine, of replicas and of the sync protocol (DESIGN §3, §4).
//!
//! The merge properties never look at random metadata: every item is produced by simulating
//! devices that create, update, delete and resolve, and that exchange items over a network that
//! loses, duplicates, reorders and replays messages, so each is an item a real system could
//! hold. Only the JSON properties use arbitrary (possibly invalid) metadata.
//!
//! | property | test |
//! |---|---|
//! | 1. replicas converge (engine level, `Item<String>`) | `engine_replicas_converge` |
//! | 2. merge is idempotent and commutative in its result | `merge_idempotent_and_commutative` |
//! | 3. no acknowledged write is lost | `engine_no_acknowledged_write_lost` |
//! | 4. compaction changes no merge result | `compaction_changes_no_merge_result` |
//! | 5. replicas converge through the sync protocol | `replicas_converge_through_sync` |
//! | 6. JSON round trips, readers never panic | `*_json_*`, `json_readers_never_panic` |
//!
//! plus plain tests that bad input gets a typed error. The case counts keep the whole binary at
//! a few seconds in the `test` profile; set `MESH_PROPTEST_CASES` to run every property with
//! more cases (e.g. `MESH_PROPTEST_CASES=50000` before changing the engine).

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::feedsync::{
    canonicalize, create, delete, merge, resolve, resolve_with_version, update, HistoryItem, Item,
    MergeOutcome, Merged, Stamp, SyncMeta, Version,
};
use mesh_core::id::{DeviceId, EntryId, FeedName, FolderId, RemoteId, ReplicaId, UserId};
use mesh_core::model::{Entry, EntryData, EntryDraft, FeedKey, MediaRef, Scope};
use mesh_core::replica::{Actor, Replica, ReplicaOptions, Resolution};
use mesh_core::store::{Cursor, FeedHead, MemoryStore, Store};
use mesh_core::sync::{
    respond, Epoch, PushResult, RawEntry, Request, Response, SessionConfig, SessionEvent, Step,
    SyncReport, SyncSession,
};
use mesh_core::time::Timestamp;
use mesh_core::{CoreError, ErrorCode};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;

// ---- common helpers ---------------------------------------------------------------------------

/// A proptest configuration with `cases` cases (or `MESH_PROPTEST_CASES`, when set).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("MESH_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failure prints its minimal case; no regression files are written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A small deterministic generator (splitmix64) for the fates of messages in one exchange; its
/// seed comes from proptest, so runs are reproducible and shrinkable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn t0() -> Timestamp {
    Timestamp::from_unix(1_200_000_000).unwrap()
}

/// Distinct devices (endpoints); mixed case and non-ASCII so that the `by` tie-break, which
/// compares code points case-sensitively, is exercised.
const DEVICES: [&str; 5] = ["EP1", "ep2", "Ep3", "ÉP4", "EP10"];

fn device(i: usize) -> DeviceId {
    DEVICES[i].parse().unwrap()
}

fn entry_id(i: usize) -> EntryId {
    format!("item.{i}").parse().unwrap()
}

/// Every version of an item: the winner first, then the conflicts.
fn versions<T>(item: &Item<T>) -> impl Iterator<Item = &SyncMeta> {
    std::iter::once(&item.sync).chain(item.conflicts.iter().map(|c| &c.sync))
}

/// Checks what every stored item must be: valid, and in canonical form (best version on top,
/// conflicts best first, no duplicates, none under a `noconflicts` winner).
fn assert_well_formed<T: Clone + PartialEq + std::fmt::Debug>(item: &Item<T>) {
    item.validate().expect("a stored item is valid");
    assert_eq!(
        &canonicalize(item.clone()),
        item,
        "a stored item is in canonical form"
    );
}

/// Checks the bookkeeping of one merge result.
fn assert_merge_consistent<T: Clone + PartialEq + std::fmt::Debug>(
    local: Option<&Item<T>>,
    incoming: &Item<T>,
    m: &Merged<T>,
) {
    assert_eq!(m.outcome == MergeOutcome::Unchanged, m.item.is_none());
    if m.verbatim {
        let item = m.item.as_ref().expect("a verbatim merge stores something");
        assert!(
            same_identities(item, &canonicalize(incoming.clone())),
            "a verbatim merge stored other versions than the incoming ones"
        );
    }
    if local.is_none() {
        assert_eq!(m.outcome, MergeOutcome::Added);
    } else {
        assert_ne!(m.outcome, MergeOutcome::Added);
    }
    if let (Some(local), Some(new)) = (local, &m.item) {
        assert_ne!(
            local, new,
            "a merge reported a change but produced the same item"
        );
    }
    if let Some(item) = &m.item {
        assert_well_formed(item);
    }
}

/// Whether the written version `w` survives in `item`: as the winner, as a conflict, or
/// covered by the history of one of them.
fn survives<T>(item: &Item<T>, w: &SyncMeta) -> bool {
    versions(item).any(|v| v.same_version(w) || v.knows(w))
}

// ---- the engine-level simulation --------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Kind {
    Create,
    Update,
    Delete,
    Resolve,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => Just(Kind::Create),
        4 => Just(Kind::Update),
        1 => Just(Kind::Delete),
        3 => Just(Kind::Resolve),
    ]
}

#[derive(Debug, Clone)]
enum EngineOp {
    /// A local operation at one replica (indices are taken modulo the counts).
    Write {
        replica: usize,
        id: usize,
        kind: Kind,
        pick: usize,
        dt: i64,
    },
    /// `from` sends every item it holds to `to`; `seed` decides each message's fate (delivered,
    /// duplicated, lost, kept for a later replay) and the delivery order.
    Exchange { from: usize, to: usize, seed: u64 },
    /// An old message is delivered (again) to some replica.
    Replay { pick: Index, to: usize },
}

fn engine_op() -> impl Strategy<Value = EngineOp> {
    prop_oneof![
        6 => (0..5usize, 0..3usize, kind(), 0..12usize, 0..3i64).prop_map(
            |(replica, id, kind, pick, dt)| EngineOp::Write { replica, id, kind, pick, dt }
        ),
        3 => (0..5usize, 0..5usize, any::<u64>())
            .prop_map(|(from, to, seed)| EngineOp::Exchange { from, to, seed }),
        1 => (any::<Index>(), 0..5usize).prop_map(|(pick, to)| EngineOp::Replay { pick, to }),
    ]
}

#[derive(Debug, Clone)]
struct EngineCase {
    replicas: usize,
    ids: usize,
    /// Per id: whether its items say `noconflicts` (set at creation, inherited by updates).
    noconflicts: Vec<bool>,
    ops: Vec<EngineOp>,
}

fn engine_case(max_ops: usize, allow_noconflicts: bool) -> impl Strategy<Value = EngineCase> {
    let nc = if allow_noconflicts { 0.25 } else { 0.0 };
    (
        2..=5usize,
        1..=3usize,
        prop::collection::vec(prop::bool::weighted(nc), 3),
        prop::collection::vec(engine_op(), 1..max_ops),
    )
        .prop_map(|(replicas, ids, noconflicts, ops)| EngineCase {
            replicas,
            ids,
            noconflicts,
            ops,
        })
}

/// Replicas holding `Item<String>` per id, driven by the engine's free functions.
struct EngineSim {
    noconflicts: Vec<bool>,
    ids: usize,
    replicas: Vec<BTreeMap<EntryId, Item<String>>>,
    clock: Timestamp,
    writes: u64,
    /// Messages sent so far (for replays).
    pool: Vec<Item<String>>,
    /// Every item a local operation produced (its winner is the version written).
    written: Vec<Item<String>>,
    /// Every item state ever stored by any replica.
    seen: Vec<Item<String>>,
}

const POOL: usize = 48;

impl EngineSim {
    fn run(case: &EngineCase) -> Self {
        let mut sim = EngineSim {
            noconflicts: case.noconflicts.clone(),
            ids: case.ids,
            replicas: vec![BTreeMap::new(); case.replicas],
            clock: t0(),
            writes: 0,
            pool: Vec::new(),
            written: Vec::new(),
            seen: Vec::new(),
        };
        for op in &case.ops {
            sim.apply(op);
        }
        sim
    }

    fn apply(&mut self, op: &EngineOp) {
        let n = self.replicas.len();
        match *op {
            EngineOp::Write {
                replica,
                id,
                kind,
                pick,
                dt,
            } => self.write(replica % n, id % self.ids, kind, pick, dt),
            EngineOp::Exchange { from, to, seed } => {
                let from = from % n;
                let mut to = to % n;
                if to == from {
                    to = (from + 1) % n;
                }
                self.exchange(from, to, seed);
            }
            EngineOp::Replay { pick, to } => {
                if !self.pool.is_empty() {
                    let item = self.pool[pick.index(self.pool.len())].clone();
                    self.deliver(to % n, item);
                }
            }
        }
    }

    fn write(&mut self, r: usize, id: usize, kind: Kind, pick: usize, dt: i64) {
        self.clock = self.clock.plus_secs(dt);
        self.writes += 1;
        let stamp = Stamp::new(device(r), self.clock);
        let content = format!("{}#{}", DEVICES[r], self.writes);
        let key = entry_id(id);
        let new = match self.replicas[r].get(&key) {
            None => match kind {
                Kind::Create => {
                    let mut item = create(key.clone(), &stamp, content);
                    item.sync.noconflicts = self.noconflicts[id];
                    item
                }
                // Nothing to update, delete or resolve here.
                _ => return,
            },
            Some(cur) => match kind {
                Kind::Create | Kind::Update => update(cur, &stamp, content, false).unwrap(),
                Kind::Delete if !cur.is_deleted() => delete(cur, &stamp).unwrap(),
                Kind::Delete => update(cur, &stamp, content, false).unwrap(),
                Kind::Resolve if cur.has_conflicts() => match pick % 3 {
                    0 => {
                        let index = (pick / 3) % (1 + cur.conflicts.len());
                        resolve_with_version(cur, &stamp, index).unwrap()
                    }
                    1 => resolve(cur, &stamp, content, false).unwrap(),
                    _ => resolve(cur, &stamp, cur.content.clone(), true).unwrap(),
                },
                Kind::Resolve => update(cur, &stamp, content, false).unwrap(),
            },
        };
        assert_well_formed(&new);
        if let Some(cur) = self.replicas[r].get(&key) {
            assert_eq!(new.sync.updates, cur.sync.updates + 1);
            assert_eq!(
                new.sync.noconflicts, cur.sync.noconflicts,
                "noconflicts is inherited"
            );
            assert!(new.sync.knows(&cur.sync), "a write knows what it replaced");
            if matches!(kind, Kind::Resolve) {
                assert!(!new.has_conflicts(), "a resolve leaves no conflict");
                for c in &cur.conflicts {
                    assert!(new.sync.knows(&c.sync), "a resolve covers what it resolved");
                }
            }
        }
        self.written.push(new.clone());
        self.seen.push(new.clone());
        self.replicas[r].insert(key, new);
    }

    fn exchange(&mut self, from: usize, to: usize, seed: u64) {
        let mut rng = Rng(seed);
        let mut deliveries = Vec::new();
        let items: Vec<_> = self.replicas[from].values().cloned().collect();
        for item in &items {
            match rng.below(6) {
                // Lost in transit, but a copy shows up later.
                0 => self.pool_push(&mut rng, item.clone()),
                // Duplicated.
                1 => {
                    deliveries.push(item.clone());
                    deliveries.push(item.clone());
                }
                // Delivered, and replayed later.
                2 => {
                    deliveries.push(item.clone());
                    self.pool_push(&mut rng, item.clone());
                }
                // Simply delivered.
                _ => deliveries.push(item.clone()),
            }
        }
        rng.shuffle(&mut deliveries);
        for item in deliveries {
            self.deliver(to, item);
        }
    }

    fn pool_push(&mut self, rng: &mut Rng, item: Item<String>) {
        if self.pool.len() < POOL {
            self.pool.push(item);
        } else {
            let at = rng.below(POOL);
            self.pool[at] = item;
        }
    }

    /// Merges `incoming` into replica `to`; whether its item changed.
    fn deliver(&mut self, to: usize, incoming: Item<String>) -> bool {
        let id = incoming.id().clone();
        let local = self.replicas[to].get(&id);
        let m = merge(local, incoming.clone()).expect("items of a valid history merge");
        assert_merge_consistent(local, &incoming, &m);
        match m.item {
            Some(item) => {
                self.seen.push(item.clone());
                self.replicas[to].insert(id, item);
                true
            }
            None => false,
        }
    }

    /// Everyone merges everyone's items until a full round changes nothing; returns the number
    /// of rounds that changed something.
    fn settle(&mut self) -> usize {
        let n = self.replicas.len();
        for round in 0..32 {
            let mut changed = false;
            for from in 0..n {
                for to in 0..n {
                    if from == to {
                        continue;
                    }
                    let items: Vec<_> = self.replicas[from].values().cloned().collect();
                    for item in items {
                        changed |= self.deliver(to, item);
                    }
                }
            }
            if !changed {
                return round;
            }
        }
        panic!("the replicas did not become quiescent in 32 full exchanges");
    }

    /// Every item state seen, grouped by id.
    fn seen_by_id(&self) -> Vec<Vec<Item<String>>> {
        let mut groups: BTreeMap<EntryId, Vec<Item<String>>> = BTreeMap::new();
        for item in &self.seen {
            groups
                .entry(item.id().clone())
                .or_default()
                .push(item.clone());
        }
        groups.into_values().collect()
    }
}

/// Pairs of item states of the same id, picked from a simulation.
fn pick_pairs(
    sim: &EngineSim,
    picks: &[(Index, Index, Index)],
) -> Vec<(Item<String>, Item<String>)> {
    let groups = sim.seen_by_id();
    if groups.is_empty() {
        return Vec::new();
    }
    picks
        .iter()
        .map(|(g, a, b)| {
            let group = &groups[g.index(groups.len())];
            (
                group[a.index(group.len())].clone(),
                group[b.index(group.len())].clone(),
            )
        })
        .collect()
}

fn pair_picks() -> impl Strategy<Value = Vec<(Index, Index, Index)>> {
    prop::collection::vec(any::<(Index, Index, Index)>(), 1..40)
}

/// The item a replica holds after merging `incoming` into `local`.
fn merged_item(local: &Item<String>, incoming: &Item<String>) -> (MergeOutcome, Item<String>) {
    let m = merge(Some(local), incoming.clone()).expect("items of a valid history merge");
    assert_merge_consistent(Some(local), incoming, &m);
    (m.outcome, m.item.unwrap_or_else(|| local.clone()))
}

fn same_identities<T>(a: &Item<T>, b: &Item<T>) -> bool {
    a.sync.same_version(&b.sync)
        && a.conflicts.len() == b.conflicts.len()
        && a.conflicts
            .iter()
            .zip(&b.conflicts)
            .all(|(x, y)| x.sync.same_version(&y.sync))
}

fn compacted<T: Clone>(item: &Item<T>) -> Item<T> {
    let mut c = item.clone();
    c.compact();
    c
}

// ---- properties 1 to 4: the engine ------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    /// Property 1: whatever the operations and however messages are lost, duplicated,
    /// reordered and replayed, a final full exchange leaves every replica with identical items
    /// (same winner, same conflicts in the same canonical order, same contents).
    #[test]
    fn engine_replicas_converge(case in engine_case(120, true)) {
        let mut sim = EngineSim::run(&case);
        sim.settle();
        for r in 1..sim.replicas.len() {
            prop_assert_eq!(&sim.replicas[0], &sim.replicas[r], "replica 0 and {} differ", r);
        }
        // Everything anyone created reached everyone.
        let ids: BTreeSet<&EntryId> = sim.written.iter().map(|i| i.id()).collect();
        prop_assert_eq!(ids.len(), sim.replicas[0].len());
    }

    /// Property 3: every version any replica ever wrote is, once the replicas have converged,
    /// the winner, one of the conflicts, or covered by the history of one of them.
    #[test]
    fn engine_no_acknowledged_write_lost(case in engine_case(120, false)) {
        let mut sim = EngineSim::run(&case);
        sim.settle();
        for w in &sim.written {
            for (r, replica) in sim.replicas.iter().enumerate() {
                let item = &replica[w.id()];
                prop_assert!(
                    survives(item, &w.sync),
                    "write {:?} ({:?}) is lost at replica {}: {:#?}",
                    w.sync.topmost(), w.content, r, item
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Property 2: merge is idempotent (merging the same item again changes nothing, with an
    /// `Unchanged` outcome) and commutative in its result (merge(a, b) and merge(b, a) hold the
    /// same item), for pairs of item states that a valid history produced.
    #[test]
    fn merge_idempotent_and_commutative(case in engine_case(100, true), picks in pair_picks()) {
        let sim = EngineSim::run(&case);
        for (a, b) in pick_pairs(&sim, &picks) {
            // Merging into nothing gives the item itself; merging an item into itself, nothing.
            let added = merge(None, a.clone()).unwrap();
            prop_assert_eq!(added.outcome, MergeOutcome::Added);
            prop_assert_eq!(added.item.as_ref(), Some(&a));
            prop_assert_eq!(merge(Some(&a), a.clone()).unwrap().outcome, MergeOutcome::Unchanged);

            let (outcome, ab) = merged_item(&a, &b);
            let again = merge(Some(&ab), b.clone()).unwrap();
            prop_assert_eq!(
                again.outcome, MergeOutcome::Unchanged,
                "merge(merge(a, b), b) changed: a = {:#?}\nb = {:#?}\nab = {:#?}\nthen {:#?}",
                a, b, ab, again.item
            );
            if outcome == MergeOutcome::Unchanged && !a.sync.noconflicts {
                // Without `noconflicts`, a merge only changes nothing when it learns nothing.
                prop_assert!(b.conflicts.iter().map(|c| &c.sync).chain([&b.sync])
                    .all(|v| versions(&a).any(|l| l.knows(v))));
            }

            let (_, ba) = merged_item(&b, &a);
            prop_assert_eq!(
                &ab, &ba,
                "merge(a, b) != merge(b, a): a = {:#?}\nb = {:#?}", a, b
            );
        }
    }

    /// Property 4: compacting the history of either side (or both) changes no merge result:
    /// the same outcome, and the same winner and conflicts (by identity, in the same order,
    /// with the same contents). Compaction also keeps every `knows` answer.
    #[test]
    fn compaction_changes_no_merge_result(case in engine_case(100, true), picks in pair_picks()) {
        let sim = EngineSim::run(&case);
        for (a, b) in pick_pairs(&sim, &picks) {
            let (ca, cb) = (compacted(&a), compacted(&b));
            prop_assert_eq!(&compacted(&ca), &ca, "compaction is idempotent");
            for (x, cx) in versions(&a).zip(versions(&ca)) {
                for (y, cy) in versions(&b).zip(versions(&cb)) {
                    let k = x.knows(y);
                    prop_assert_eq!(k, cx.knows(y));
                    prop_assert_eq!(k, x.knows(cy));
                    prop_assert_eq!(k, cx.knows(cy));
                }
            }
            let (outcome, plain) = merged_item(&a, &b);
            for (l, i) in [(&ca, &b), (&a, &cb), (&ca, &cb)] {
                let (o, r) = merged_item(l, i);
                prop_assert_eq!(
                    o, outcome,
                    "outcome changed by compaction: a = {:#?}\nb = {:#?}", a, b
                );
                prop_assert!(
                    same_identities(&r, &plain),
                    "versions changed by compaction: a = {:#?}\nb = {:#?}\n{:#?}\nvs {:#?}",
                    a, b, plain, r
                );
                let contents = |x: &Item<String>| {
                    std::iter::once(x.content.clone())
                        .chain(x.conflicts.iter().map(|c| c.content.clone()))
                        .collect::<Vec<_>>()
                };
                prop_assert_eq!(contents(&r), contents(&plain));
            }
        }
    }
}

// ---- property 5: replicas and the sync protocol -----------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Dir {
    Both,
    PullOnly,
    PushOnly,
}

#[derive(Debug, Clone)]
enum ReplicaOp {
    Write {
        replica: usize,
        feed: usize,
        id: usize,
        kind: Kind,
        pick: usize,
        dt: i64,
    },
    /// Replica `a` syncs with replica `b` (a session at `a`, `respond` at `b`).
    Sync {
        a: usize,
        b: usize,
        page: u32,
        dir: Dir,
        /// Drop the session when it is about to send its request number `.0`; with `.1`, the
        /// request reaches the remote first and only its response is lost.
        cut: Option<(usize, bool)>,
    },
    /// A push sent earlier arrives at its target again.
    Replay { pick: Index },
}

fn replica_op() -> impl Strategy<Value = ReplicaOp> {
    let dir = prop_oneof![4 => Just(Dir::Both), 1 => Just(Dir::PullOnly), 1 => Just(Dir::PushOnly)];
    let cut = prop::option::weighted(0.35, (0..8usize, any::<bool>()));
    prop_oneof![
        6 => (0..4usize, 0..2usize, 0..3usize, kind(), 0..12usize, 0..3i64).prop_map(
            |(replica, feed, id, kind, pick, dt)| ReplicaOp::Write {
                replica, feed, id, kind, pick, dt
            }
        ),
        3 => (0..4usize, 0..4usize, 1..=5u32, dir, cut)
            .prop_map(|(a, b, page, dir, cut)| ReplicaOp::Sync { a, b, page, dir, cut }),
        1 => any::<Index>().prop_map(|pick| ReplicaOp::Replay { pick }),
    ]
}

#[derive(Debug, Clone)]
struct ReplicaCase {
    /// Per replica: whether it compacts the histories it writes.
    compact: Vec<bool>,
    ops: Vec<ReplicaOp>,
    /// Page sizes for the final rounds and for walking the change logs.
    pages: Vec<usize>,
    /// Which directions the final rounds sync: pulls alone or pushes alone must also converge,
    /// so that a lost cursor in one direction is not repaired by the other.
    final_dir: Dir,
}

fn replica_case() -> impl Strategy<Value = ReplicaCase> {
    (
        prop::collection::vec(any::<bool>(), 3..=4),
        prop::collection::vec(replica_op(), 1..100),
        prop::collection::vec(1..=5usize, 1..6),
        prop_oneof![Just(Dir::Both), Just(Dir::PullOnly), Just(Dir::PushOnly)],
    )
        .prop_map(|(compact, ops, pages, final_dir)| ReplicaCase {
            compact,
            ops,
            pages,
            final_dir,
        })
}

fn feed_key(i: usize) -> FeedKey {
    match i {
        0 => FeedKey::folder("f1".parse().unwrap(), "todos".parse().unwrap()),
        _ => FeedKey::mesh("ann".parse().unwrap(), "notes".parse().unwrap()),
    }
}

fn replica_id(i: usize) -> ReplicaId {
    format!("replica-{i}").parse().unwrap()
}

fn remote_id(i: usize) -> RemoteId {
    format!("peer-{i}").parse().unwrap()
}

/// Sends a value through JSON, as a transport would, checking that nothing is lost.
fn through_json<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) -> T {
    let bytes = serde_json::to_vec(&v).expect("serializes");
    let back: T = serde_json::from_slice(&bytes).expect("deserializes");
    assert_eq!(back, v, "JSON round trip lost something");
    back
}

/// A request sent through JSON: the receiver reads the request with its entries decoded
/// (a device sends its own entries as the JSON its store keeps).
fn request_through_json(r: Request) -> Request {
    let bytes = serde_json::to_vec(&r).expect("serializes");
    let back: Request = serde_json::from_slice(&bytes).expect("deserializes");
    assert_eq!(
        back,
        r.decoded().expect("decodes"),
        "JSON round trip lost something"
    );
    back
}

/// Both replicas of a pair, mutably.
fn two<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// The end of one session.
struct SessionEnd {
    report: SyncReport,
    events: Vec<SessionEvent>,
}

type Snapshot = Vec<BTreeMap<FeedKey, Vec<Entry>>>;

/// Every entry of every feed of a replica.
fn view(r: &Replica<MemoryStore>) -> BTreeMap<FeedKey, Vec<Entry>> {
    [feed_key(0), feed_key(1)]
        .into_iter()
        .map(|f| {
            let entries = r.store().list(&f, None, usize::MAX).unwrap();
            (f, entries)
        })
        .collect()
}

struct ReplicaSim {
    replicas: Vec<Replica<MemoryStore>>,
    actors: Vec<Actor>,
    clock: Timestamp,
    writes: u64,
    /// Pushes sent so far, with their target.
    pushes: Vec<(usize, Request)>,
    /// Every version written, with its feed.
    written: Vec<(FeedKey, Entry)>,
}

impl ReplicaSim {
    fn new(compact: &[bool]) -> Self {
        ReplicaSim {
            replicas: compact
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    Replica::with_options(
                        MemoryStore::new(replica_id(i)),
                        ReplicaOptions { compact_history: c },
                    )
                })
                .collect(),
            // Two users; every replica is its own device.
            actors: (0..compact.len())
                .map(|i| Actor::new(["ann", "bob"][i % 2].parse().unwrap(), device(i)))
                .collect(),
            clock: t0(),
            writes: 0,
            pushes: Vec::new(),
            written: Vec::new(),
        }
    }

    fn apply(&mut self, op: &ReplicaOp) {
        let n = self.replicas.len();
        match *op {
            ReplicaOp::Write {
                replica,
                feed,
                id,
                kind,
                pick,
                dt,
            } => self.write(replica % n, &feed_key(feed), &entry_id(id), kind, pick, dt),
            ReplicaOp::Sync {
                a,
                b,
                page,
                dir,
                cut,
            } => {
                let a = a % n;
                let mut b = b % n;
                if a == b {
                    b = (a + 1) % n;
                }
                let mut config = SessionConfig::new(remote_id(b));
                config.page_size = page;
                config.pull = !matches!(dir, Dir::PushOnly);
                config.push = !matches!(dir, Dir::PullOnly);
                self.session(a, b, config, cut);
            }
            ReplicaOp::Replay { pick } => {
                if !self.pushes.is_empty() {
                    let (to, request) = self.pushes[pick.index(self.pushes.len())].clone();
                    let response = respond(&mut self.replicas[to], request).expect("replayed push");
                    assert!(matches!(response, Response::Pushed { .. }));
                }
            }
        }
    }

    fn write(&mut self, r: usize, feed: &FeedKey, id: &EntryId, kind: Kind, pick: usize, dt: i64) {
        self.clock = self.clock.plus_secs(dt);
        self.writes += 1;
        let (actor, when) = (&self.actors[r], self.clock);
        let draft = EntryDraft::new(
            format!("{} #{}", actor.device, self.writes),
            serde_json::json!({ "n": self.writes, "by": actor.device.as_str() }),
        );
        let replica = &mut self.replicas[r];
        let before = replica.get(feed, id).unwrap();
        let head = replica.store().head(feed).unwrap();
        let (result, expected) = match kind {
            Kind::Create => (
                replica.create(feed, id.clone(), draft, actor, when),
                before.as_ref().map(|_| ErrorCode::AlreadyExists),
            ),
            Kind::Update => (
                replica.update(feed, id, draft, actor, when),
                before.is_none().then_some(ErrorCode::NotFound),
            ),
            Kind::Delete => (
                replica.delete(feed, id, actor, when),
                before
                    .as_ref()
                    .is_none_or(|e| e.is_deleted())
                    .then_some(ErrorCode::NotFound),
            ),
            Kind::Resolve => {
                let conflicts = before.as_ref().map_or(0, |e| e.conflicts.len());
                let resolution = match pick % 3 {
                    0 => Resolution::Pick((pick / 3) % (1 + conflicts)),
                    1 => Resolution::Write(draft),
                    _ => Resolution::Delete,
                };
                (
                    replica.resolve(feed, id, resolution, actor, when),
                    (conflicts == 0).then_some(ErrorCode::NotFound),
                )
            }
        };
        match (result, expected) {
            (Ok(w), None) => {
                assert_well_formed(&w.entry);
                assert_eq!(replica.get(feed, id).unwrap().as_ref(), Some(&w.entry));
                assert_eq!(replica.store().head(feed).unwrap(), w.seq);
                assert!(w.seq > head);
                if let Some(before) = &before {
                    assert!(w.entry.sync.knows(&before.sync));
                    // The author never changes, except that resolving concurrent creates by two
                    // users may keep the other creator's version.
                    let authors: Vec<&UserId> = std::iter::once(&before.content)
                        .chain(before.conflicts.iter().map(|c| &c.content))
                        .map(|d| &d.author)
                        .collect();
                    assert!(authors.contains(&&w.entry.content.author));
                    if !matches!(kind, Kind::Resolve) {
                        assert_eq!(w.entry.content.author, before.content.author);
                    }
                } else {
                    assert_eq!(w.entry.content.author, actor.user);
                }
                assert_eq!(w.entry.content.updated, when);
                self.written.push((feed.clone(), w.entry));
            }
            (Err(e), Some(code)) => {
                assert_eq!(e.code(), code, "{kind:?} of {id} failed with {e}");
                assert_eq!(
                    replica.get(feed, id).unwrap(),
                    before,
                    "a failed write changed the entry"
                );
                assert_eq!(
                    replica.store().head(feed).unwrap(),
                    head,
                    "a failed write took a sequence"
                );
            }
            (Ok(w), Some(code)) => panic!("{kind:?} of {id} should fail with {code}, wrote {w:?}"),
            (Err(e), None) => panic!("{kind:?} of {id} failed: {e}"),
        }
    }

    /// Runs a session at replica `a` against replica `b`; `None` when it was cut off.
    fn session(
        &mut self,
        a: usize,
        b: usize,
        config: SessionConfig,
        cut: Option<(usize, bool)>,
    ) -> Option<SessionEnd> {
        let (local, remote) = two(&mut self.replicas, a, b);
        let two_way = config.pull && config.push;
        let mut session = SyncSession::new(config);
        let mut events = Vec::new();
        for step in 0.. {
            assert!(step < 10_000, "a session did not end");
            let request = match session.poll(local).expect("poll") {
                Step::Done(report) => {
                    let r = &report;
                    assert_eq!(r.added + r.updated + r.conflicts + r.unchanged, r.received);
                    let merged = events
                        .iter()
                        .filter(|e| matches!(e, SessionEvent::Merged { .. }))
                        .count();
                    assert_eq!(merged, r.received);
                    assert_eq!(events.len() - merged, r.sent);
                    if two_way {
                        assert!(
                            view(local) == view(remote),
                            "a completed two-way session left the two replicas different"
                        );
                    }
                    return Some(SessionEnd { report, events });
                }
                Step::Send(request) => request_through_json(request),
            };
            assert!(session.is_waiting());
            if let Some((at, delivered)) = cut {
                if at == step && !delivered {
                    return None;
                }
            }
            if matches!(request, Request::Push { .. }) {
                self.pushes.push((b, request.clone()));
            }
            let response = through_json(respond(remote, request).expect("respond"));
            if cut.is_some_and(|(at, _)| at == step) {
                return None;
            }
            events.extend(session.receive(local, response).expect("receive"));
        }
        unreachable!()
    }

    fn snapshot(&self) -> Snapshot {
        self.replicas.iter().map(view).collect()
    }

    /// One session between every ordered pair of replicas; the session reports.
    fn full_round(&mut self, page: u32, dir: Dir) -> Vec<SessionEnd> {
        let n = self.replicas.len();
        let mut ends = Vec::new();
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    let mut config = SessionConfig::new(remote_id(b));
                    config.page_size = page;
                    config.pull = !matches!(dir, Dir::PushOnly);
                    config.push = !matches!(dir, Dir::PullOnly);
                    ends.push(self.session(a, b, config, None).expect("not cut"));
                }
            }
        }
        ends
    }
}

/// Walks a replica's change log of `feed` in pages of the given sizes.
fn walk_changes(
    replica: &Replica<MemoryStore>,
    feed: &FeedKey,
    pages: &[usize],
    skip: Option<&ReplicaId>,
) -> Result<Vec<Entry>, TestCaseError> {
    let mut cursor = Cursor::ZERO;
    let mut last = Cursor::ZERO;
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for k in 0.. {
        prop_assert!(k < 10_000, "paging did not end");
        let limit = pages[k % pages.len()];
        let page = replica.store().changes_since(feed, cursor, limit, skip)?;
        if skip.is_none() {
            prop_assert_eq!(&page, &replica.changes_since(feed, cursor, limit)?);
        }
        prop_assert!(page.changes.len() <= limit);
        prop_assert!(page.next >= cursor, "next went back");
        for c in &page.changes {
            prop_assert!(c.seq > last, "changes out of order");
            prop_assert!(c.seq > cursor && c.seq <= page.next);
            last = c.seq;
            prop_assert!(ids.insert(c.entry.sync.id.clone()), "entry seen twice");
            let stored = replica.get(feed, &c.entry.sync.id)?;
            prop_assert_eq!(Some(&c.entry), stored.as_ref());
            out.push(c.entry.clone());
        }
        if !page.more {
            prop_assert_eq!(
                page.next,
                replica.store().head(feed)?,
                "the walk ends at the head"
            );
            break;
        }
        prop_assert!(page.next > cursor, "a page with more made no progress");
        cursor = page.next;
    }
    Ok(out)
}

proptest! {
    #![proptest_config(config(384))]

    /// Property 5: replicas written through the `Replica` API and synced with `SyncSession` /
    /// `respond` (JSON on the wire) in random pairs, with small pages, sessions cut off midway
    /// and pushes replayed, converge once every pair syncs until nothing changes; then another
    /// full round moves nothing, and every change log pages correctly.
    #[test]
    fn replicas_converge_through_sync(case in replica_case()) {
        let mut sim = ReplicaSim::new(&case.compact);
        for op in &case.ops {
            sim.apply(op);
        }

        // Sync every pair until a full round changes nothing.
        let page = case.pages[0] as u32;
        let mut rounds = 0;
        loop {
            let before = sim.snapshot();
            sim.full_round(page, case.final_dir);
            if sim.snapshot() == before {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 16, "no quiescence after {} rounds", rounds);
        }

        let snapshot = sim.snapshot();
        for r in 1..snapshot.len() {
            prop_assert_eq!(&snapshot[0], &snapshot[r], "replica 0 and {} differ", r);
        }
        for (feed, w) in &sim.written {
            let entries = &snapshot[0][feed];
            let item = entries.iter().find(|e| e.sync.id == w.sync.id);
            prop_assert!(
                item.is_some_and(|i| survives(i, &w.sync)),
                "write {:?} lost", w.sync.topmost()
            );
        }

        // Once converged, a further round merges nothing and sends nothing.
        for end in sim.full_round(page, case.final_dir) {
            let r = &end.report;
            prop_assert_eq!(r.sent, 0, "sent after convergence: {:?}", r);
            prop_assert_eq!(r.received, 0, "received after convergence: {:?}", r);
            prop_assert_eq!(r.added + r.updated + r.conflicts, 0);
            prop_assert!(end.events.is_empty());
        }
        prop_assert!(sim.snapshot() == snapshot, "a round after convergence changed something");

        // Each change log pages through every entry exactly once, in order.
        for (r, replica) in sim.replicas.iter().enumerate() {
            for feed in [feed_key(0), feed_key(1)] {
                let walked = walk_changes(replica, &feed, &case.pages, None)?;
                let mut walked_ids: Vec<_> = walked.iter().map(|e| e.sync.id.clone()).collect();
                walked_ids.sort();
                let listed: Vec<_> = snapshot[r][&feed].iter().map(|e| e.sync.id.clone()).collect();
                prop_assert_eq!(walked_ids, listed);
                let other = replica_id((r + 1) % sim.replicas.len());
                walk_changes(replica, &feed, &case.pages, Some(&other))?;
            }
        }
    }
}

// ---- property 6: JSON -------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z \"\\\\/<>&]{0,12}", "\\PC{0,12}"]
}

fn arb_id<T: std::str::FromStr + std::fmt::Debug>() -> impl Strategy<Value = T>
where
    T::Err: std::fmt::Debug,
{
    // Ids refuse bidirectional and zero-width characters: only valid ones are drawn.
    prop_oneof!["[A-Za-z0-9._:-]{1,12}", "\\PC{1,16}"]
        .prop_filter_map("a valid id", |s: String| s.parse().ok())
}

fn arb_time() -> impl Strategy<Value = Timestamp> {
    (-62_135_596_800i64..=253_402_300_799).prop_map(|s| Timestamp::from_unix(s).unwrap())
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(arb_text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_data() -> impl Strategy<Value = EntryData> {
    (
        arb_text(),
        arb_json(),
        prop::option::of((arb_text(), arb_text(), any::<u64>())),
        arb_id::<UserId>(),
        arb_time(),
        arb_time(),
    )
        .prop_map(
            |(title, content, media, author, published, updated)| EntryData {
                title,
                content: (&content).into(),
                media: media.map(|(hash, content_type, length)| MediaRef {
                    hash,
                    content_type,
                    length,
                }),
                author,
                published,
                updated,
            },
        )
}

fn arb_history_item() -> impl Strategy<Value = HistoryItem> {
    (
        any::<u32>(),
        prop::option::of(arb_time()),
        prop::option::of(arb_id::<DeviceId>()),
    )
        .prop_map(|(sequence, when, by)| HistoryItem::new(sequence, when, by))
}

/// Sync metadata of any shape, valid or not: serialization must not care.
fn arb_meta(id: EntryId) -> impl Strategy<Value = SyncMeta> {
    (
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(arb_history_item(), 0..4),
    )
        .prop_map(move |(updates, deleted, noconflicts, history)| SyncMeta {
            id: id.clone(),
            updates,
            deleted,
            noconflicts,
            history,
        })
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    arb_id::<EntryId>().prop_flat_map(|id| {
        (
            arb_meta(id.clone()),
            arb_data(),
            prop::collection::vec(
                (arb_meta(id), arb_data()).prop_map(|(sync, content)| Version { sync, content }),
                0..3,
            ),
        )
            .prop_map(|(sync, content, conflicts)| Item {
                sync,
                content,
                conflicts,
            })
    })
}

fn arb_feed() -> impl Strategy<Value = FeedKey> {
    (
        prop_oneof![
            arb_id::<UserId>().prop_map(Scope::Mesh),
            arb_id::<FolderId>().prop_map(Scope::Folder)
        ],
        "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}".prop_map(|s| s.parse::<FeedName>().unwrap()),
    )
        .prop_map(|(scope, name)| FeedKey { scope, name })
}

fn arb_outcome() -> impl Strategy<Value = MergeOutcome> {
    prop_oneof![
        Just(MergeOutcome::Added),
        Just(MergeOutcome::Updated),
        Just(MergeOutcome::Conflict),
        Just(MergeOutcome::Unchanged),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            arb_id::<ReplicaId>(),
            prop::option::of(prop::collection::vec(arb_feed(), 0..3)),
            any::<bool>()
        )
            .prop_map(|(from, only, certificates)| Request::Feeds {
                from,
                only,
                certificates
            }),
        (
            arb_id::<ReplicaId>(),
            arb_feed(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(from, feed, since, limit)| Request::Pull {
                from,
                feed,
                since: Cursor(since),
                limit
            }),
        (
            arb_id::<ReplicaId>(),
            arb_feed(),
            prop::collection::vec(arb_entry(), 0..3)
        )
            .prop_map(|(from, feed, entries)| Request::Push {
                from,
                feed,
                entries
            }),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (
            arb_id::<ReplicaId>(),
            prop::collection::vec((arb_feed(), any::<u64>(), any::<u64>()), 0..3),
            prop::option::of((
                "[a-z0-9-]{1,12}",
                prop::collection::vec("[a-z0-9]{1,8}", 0..3)
            )),
            prop::collection::vec(
                (any::<[u8; 32]>(), arb_id::<DeviceId>(), 0i64..4_000_000_000),
                0..2
            )
        )
            .prop_map(|(replica, feeds, epoch, revoked)| Response::Feeds {
                replica,
                epoch: epoch.map(|(id, continues)| Epoch { id, continues }),
                certificates: revoked
                    .iter()
                    .map(|(seed, device, at)| {
                        let key = mesh_core::trust::SecretKey::from_seed(*seed);
                        let at = Timestamp::from_unix(*at).unwrap();
                        mesh_core::trust::DeviceCertificate::issue(
                            &key,
                            "ann".parse().unwrap(),
                            device.clone(),
                            key.public(),
                            at,
                            at,
                        )
                    })
                    .collect(),
                revocations: revoked
                    .into_iter()
                    .map(|(seed, device, at)| mesh_core::trust::Revocation::issue(
                        &mesh_core::trust::SecretKey::from_seed(seed),
                        "ann".parse().unwrap(),
                        device,
                        Timestamp::from_unix(at).unwrap()
                    ))
                    .collect(),
                feeds: feeds
                    .into_iter()
                    .map(|(feed, head, entries)| FeedHead {
                        feed,
                        head: Cursor(head),
                        entries
                    })
                    .collect(),
            }),
        (
            arb_feed(),
            prop::collection::vec(arb_entry(), 0..3),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(feed, entries, next, more)| Response::Changes {
                feed,
                entries,
                next: Cursor(next),
                more
            }),
        (
            arb_feed(),
            prop::collection::vec((arb_id::<EntryId>(), arb_outcome()), 0..4)
        )
            .prop_map(|(feed, results)| Response::Pushed {
                feed,
                results: results
                    .into_iter()
                    .map(|(id, outcome)| PushResult {
                        id,
                        outcome,
                        refused: None,
                        code: None,
                    })
                    .collect(),
            }),
    ]
}

/// A byte-level mutation of a JSON document.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]\",:0-9enfatrul \\".to_vec())
    ];
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Set(i, b) => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        Mutation::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.insert(at, *b);
        }
        Mutation::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Property 6a: entries (with any metadata and any JSON content) survive a JSON round trip,
    /// and the text form is stable.
    #[test]
    fn entry_json_round_trip(entry in arb_entry()) {
        let text = serde_json::to_string(&entry).unwrap();
        let back: Entry = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &entry, "{}", text);
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    /// Property 6b: sync protocol messages survive a JSON round trip.
    #[test]
    fn protocol_json_round_trip(request in arb_request(), response in arb_response()) {
        let text = serde_json::to_string(&request).unwrap();
        prop_assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request, "{}", text);
        let text = serde_json::to_string(&response).unwrap();
        prop_assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), response, "{}", text);
    }

    /// Property 6b': a push of entries as their stored JSON is, on the wire, the push of the
    /// entries themselves, and decodes to it.
    #[test]
    fn an_encoded_push_is_the_same_message(
        entries in prop::collection::vec(arb_entry(), 0..4),
        feed in arb_feed(),
    ) {
        let from: ReplicaId = "laptop".parse().unwrap();
        let raw: Vec<RawEntry> = entries
            .iter()
            .map(|e| {
                let json = serde_json::to_string(e).unwrap();
                RawEntry::new(serde_json::value::RawValue::from_string(json).unwrap())
            })
            .collect();
        let encoded = Request::PushEncoded { from: from.clone(), feed: feed.clone(), entries: raw };
        let plain = Request::Push { from, feed, entries };
        let text = serde_json::to_string(&encoded).unwrap();
        prop_assert_eq!(&text, &serde_json::to_string(&plain).unwrap());
        prop_assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), plain.clone());
        prop_assert_eq!(encoded.decoded().unwrap(), plain);
    }

    /// Property 6c: no input makes the JSON readers panic: arbitrary bytes, and valid documents
    /// with a few bytes changed. What they do accept serializes back to something they accept.
    #[test]
    fn json_readers_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        entry in arb_entry(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let _ = serde_json::from_slice::<Entry>(&bytes);
        let _ = serde_json::from_slice::<Request>(&bytes);
        let _ = serde_json::from_slice::<Response>(&bytes);

        let mut doc = serde_json::to_vec(&entry).unwrap();
        for m in &mutations {
            mutate(&mut doc, m);
        }
        if let Ok(e) = serde_json::from_slice::<Entry>(&doc) {
            let again = serde_json::to_vec(&e).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Entry>(&again).unwrap(), e);
        }
        let push = serde_json::to_vec(&Request::Push {
            from: "r".parse().unwrap(),
            feed: feed_key(0),
            entries: vec![entry],
        }).unwrap();
        let mut doc = push;
        for m in &mutations {
            mutate(&mut doc, m);
        }
        let _ = serde_json::from_slice::<Request>(&doc);
    }
}

// ---- bad input gets a typed error -------------------------------------------------------------

fn stamp(by: &str, secs: i64) -> Stamp {
    Stamp::new(by.parse().unwrap(), t0().plus_secs(secs))
}

fn sample_item() -> Item<String> {
    let base = create(entry_id(1), &stamp("A", 0), "v1".to_string());
    update(&base, &stamp("A", 1), "v2".to_string(), false).unwrap()
}

#[test]
fn merge_of_empty_history_is_invalid_sync() {
    let mut bad = sample_item();
    bad.sync.history.clear();
    for local in [None, Some(&sample_item())] {
        let err = merge(local, bad.clone()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidSync, "{err}");
    }
    // Also when only a conflict is broken.
    let mut with_conflict = sample_item();
    let mut conflict = create(entry_id(1), &stamp("B", 0), "b".to_string());
    conflict.sync.history.clear();
    with_conflict.conflicts.push(Version {
        sync: conflict.sync,
        content: conflict.content,
    });
    let err = merge(None, with_conflict).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSync, "{err}");
}

#[test]
fn history_item_without_when_and_by_is_invalid_sync() {
    let mut bad = sample_item();
    bad.sync.history[1] = HistoryItem::new(1, None, None);
    let err = merge(Some(&sample_item()), bad).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSync, "{err}");
    assert!(err.to_string().contains("neither when nor by"), "{err}");
    // And a stamp without either is refused before it can make one.
    let err = Stamp::partial(None, None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSync);
}

#[test]
fn updates_below_topmost_sequence_is_invalid_sync() {
    let mut bad = sample_item();
    bad.sync.updates = 1; // topmost sequence is 2
    let err = merge(None, bad).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSync, "{err}");
    let mut zero = sample_item();
    zero.sync.history[0].sequence = 0;
    assert_eq!(
        merge(None, zero).unwrap_err().code(),
        ErrorCode::InvalidSync
    );
}

#[test]
fn merge_keeps_one_copy_of_a_repeated_version() {
    let item = sample_item();
    let other = update(&item, &stamp("B", 2), "b".to_string(), false).unwrap();
    let mut doubled = other.clone();
    for _ in 0..2 {
        doubled.conflicts.push(Version {
            sync: item.sync.clone(),
            content: item.content.clone(),
        });
    }
    // `other` knows `item`, but a foreign tool sent it as a conflict, twice.
    let added = merge(None, doubled).unwrap().item.unwrap();
    assert_eq!(added.conflicts.len(), 1);
    assert!(!added.conflicts[0].sync.same_version(&other.sync));
}

#[test]
fn merge_of_another_id_is_invalid_sync() {
    let other = create(entry_id(2), &stamp("B", 0), "x".to_string());
    let err = merge(Some(&sample_item()), other).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSync, "{err}");
}

/// A replica with two entries, and the entries another replica wrote.
fn replica_pair() -> (Replica<MemoryStore>, Vec<Entry>, FeedKey) {
    let feed = feed_key(0);
    let ann = Actor::new("ann".parse().unwrap(), "EP1".parse().unwrap());
    let bob = Actor::new("bob".parse().unwrap(), "EP2".parse().unwrap());
    let mut mine = Replica::new(MemoryStore::new(replica_id(0)));
    let mut theirs = Replica::new(MemoryStore::new(replica_id(1)));
    let draft = |t: &str| EntryDraft::new(t, serde_json::json!({ "t": t }));
    for i in 0..2 {
        mine.create(&feed, entry_id(i), draft("mine"), &ann, t0())
            .unwrap();
    }
    let mut incoming = Vec::new();
    for i in 0..3 {
        let w = theirs
            .create(&feed, entry_id(i), draft("theirs"), &bob, t0().plus_secs(1))
            .unwrap();
        incoming.push(w.entry);
    }
    (mine, incoming, feed)
}

type StoreView = (Vec<Entry>, Cursor, Vec<FeedHead>, usize);

fn store_view(r: &Replica<MemoryStore>, feed: &FeedKey) -> StoreView {
    (
        r.store().list(feed, None, usize::MAX).unwrap(),
        r.store().head(feed).unwrap(),
        r.store().feeds().unwrap(),
        r.changes_since(feed, Cursor::ZERO, 100)
            .unwrap()
            .changes
            .len(),
    )
}

#[test]
fn merge_batch_with_duplicate_ids_writes_nothing() {
    let (mut mine, incoming, feed) = replica_pair();
    let before = store_view(&mine, &feed);
    // Entry 2 is new here, entry 0 conflicts; both would be written if the batch were valid.
    let batch = vec![
        incoming[2].clone(),
        incoming[0].clone(),
        incoming[0].clone(),
    ];
    let err = mine.merge_batch(&feed, batch, None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DuplicateId, "{err}");
    assert_eq!(store_view(&mine, &feed), before);

    // A malformed entry late in a batch also leaves nothing of the batch behind.
    let mut bad = incoming[1].clone();
    bad.sync.history.clear();
    let err = mine
        .merge_batch(&feed, vec![incoming[2].clone(), bad], None)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSync, "{err}");
    assert_eq!(store_view(&mine, &feed), before);

    // The same batch without the duplicate goes through.
    let reports = mine
        .merge_batch(&feed, vec![incoming[2].clone(), incoming[0].clone()], None)
        .unwrap();
    assert_eq!(reports[0].outcome, MergeOutcome::Added);
    assert_eq!(reports[1].outcome, MergeOutcome::Conflict);
}

#[test]
fn writes_to_unknown_or_existing_entries_fail_typed() {
    let (mut mine, _, feed) = replica_pair();
    let ann = Actor::new("ann".parse().unwrap(), "EP1".parse().unwrap());
    let draft = EntryDraft::new("x", serde_json::json!(null));
    let unknown = entry_id(9);
    let before = store_view(&mine, &feed);
    let code = |r: Result<_, CoreError>| r.unwrap_err().code();

    assert_eq!(
        code(mine.update(&feed, &unknown, draft.clone(), &ann, t0())),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(mine.delete(&feed, &unknown, &ann, t0())),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(mine.resolve(&feed, &unknown, Resolution::Delete, &ann, t0())),
        ErrorCode::NotFound
    );
    // Resolving an entry without conflicts, or picking a version that does not exist.
    assert_eq!(
        code(mine.resolve(&feed, &entry_id(0), Resolution::Pick(0), &ann, t0())),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(mine.create(&feed, entry_id(0), draft.clone(), &ann, t0())),
        ErrorCode::AlreadyExists
    );
    assert_eq!(store_view(&mine, &feed), before);

    // Tombstones keep their ids: no create over them, no second delete.
    mine.delete(&feed, &entry_id(1), &ann, t0()).unwrap();
    let before = store_view(&mine, &feed);
    assert_eq!(
        code(mine.create(&feed, entry_id(1), draft, &ann, t0())),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(mine.delete(&feed, &entry_id(1), &ann, t0())),
        ErrorCode::NotFound
    );
    assert_eq!(store_view(&mine, &feed), before);

    // The engine's own resolve refuses a version index that does not exist.
    let item = sample_item();
    let err = resolve_with_version(&item, &stamp("A", 5), 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[test]
fn session_rejects_unexpected_responses() {
    let (mut mine, _, feed) = replica_pair();
    let mut peer = Replica::new(MemoryStore::new(replica_id(1)));
    let config = SessionConfig::new(remote_id(1));
    let pushed = Response::Pushed {
        feed: feed.clone(),
        results: Vec::new(),
    };

    // A response before anything was asked.
    let mut session = SyncSession::new(config.clone());
    let err = session.receive(&mut mine, pushed.clone()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");

    // The wrong kind of response to the feeds request, and a poll while a response is due.
    let mut session = SyncSession::new(config.clone());
    assert!(matches!(
        session.poll(&mut mine).unwrap(),
        Step::Send(Request::Feeds { .. })
    ));
    let err = session.poll(&mut mine).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");
    let err = session.receive(&mut mine, pushed.clone()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");

    // The session moves on to push; an answer about another feed, or acknowledging the wrong
    // number of entries, is refused and records nothing.
    let mut session = SyncSession::new(config);
    let Step::Send(request) = session.poll(&mut mine).unwrap() else {
        panic!("expected a request")
    };
    let response = respond(&mut peer, request).unwrap();
    session.receive(&mut mine, response).unwrap();
    let Step::Send(push) = session.poll(&mut mine).unwrap() else {
        panic!("expected a request")
    };
    let Request::Push { entries, .. } = push.decoded().unwrap() else {
        panic!("expected a push")
    };
    assert_eq!(entries.len(), 2);
    let before = mine.store().sync_state(&remote_id(1), &feed).unwrap();
    let other_feed = Response::Pushed {
        feed: feed_key(1),
        results: Vec::new(),
    };
    let err = session.receive(&mut mine, other_feed).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");
    let short = Response::Pushed {
        feed: feed.clone(),
        results: vec![PushResult {
            id: entry_id(0),
            outcome: MergeOutcome::Added,
            refused: None,
            code: None,
        }],
    };
    let err = session.receive(&mut mine, short).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");
    let changes = Response::Changes {
        feed: feed.clone(),
        entries: Vec::new(),
        next: Cursor::ZERO,
        more: false,
    };
    let err = session.receive(&mut mine, changes).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");
    assert_eq!(
        mine.store().sync_state(&remote_id(1), &feed).unwrap(),
        before
    );
}

#[test]
fn pull_without_progress_is_a_protocol_error() {
    let (mut mine, _, feed) = replica_pair();
    let mut peer = Replica::new(MemoryStore::new(replica_id(1)));
    let bob = Actor::new("bob".parse().unwrap(), "EP2".parse().unwrap());
    for i in 0..3 {
        let draft = EntryDraft::new("p", serde_json::json!(i));
        peer.create(&feed, entry_id(10 + i), draft, &bob, t0())
            .unwrap();
    }
    let mut config = SessionConfig::new(remote_id(1));
    config.page_size = 1;
    let mut session = SyncSession::new(config);
    let Step::Send(request) = session.poll(&mut mine).unwrap() else {
        panic!("expected a request")
    };
    let response = respond(&mut peer, request).unwrap();
    session.receive(&mut mine, response).unwrap();
    assert!(matches!(
        session.poll(&mut mine).unwrap(),
        Step::Send(Request::Pull { .. })
    ));
    let stuck = Response::Changes {
        feed,
        entries: Vec::new(),
        next: Cursor::ZERO,
        more: true,
    };
    let err = session.receive(&mut mine, stuck).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol, "{err}");
}

#[test]
fn malformed_json_is_a_typed_error() {
    for text in [
        "{",
        "[]",
        r#"{"sync":{"id":"","updates":1},"content":null}"#,
    ] {
        let err: CoreError = serde_json::from_str::<Entry>(text).unwrap_err().into();
        assert_eq!(err.code(), ErrorCode::InvalidJson, "{text}: {err}");
    }
}

/// An entry for the query properties: id `q.<n>` (ids compare as text), a title from a few,
/// content `{"n": …}` from a few values, deleted or not.
fn query_entry(n: usize, title: u8, value: u8, deleted: bool) -> Entry {
    use mesh_core::model::EntryDraft;
    let data = EntryDraft::new(format!("t{title}"), serde_json::json!({ "n": value }))
        .into_new_data("ann".parse().unwrap(), t0());
    let e = create(
        format!("q.{n}").parse().unwrap(),
        &Stamp::new(device(0), t0()),
        data,
    );
    if deleted {
        delete(&e, &Stamp::new(device(1), t0())).unwrap()
    } else {
        e
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A `Selection` fed entries one at a time, as a server reads a feed in id order (it
    /// drops what can no longer be a result as it goes), answers what filtering, sorting
    /// and paging the whole feed at once does, tells rightly whether more entries match,
    /// and, when no order is asked, has everything it needs once `is_settled` says so.
    #[test]
    fn a_selection_answers_what_the_whole_feed_does(
        rows in prop::collection::vec((0u8..4, 0u8..5, any::<bool>()), 0..400),
        order in prop::option::of((any::<bool>(), any::<bool>())),
        filtered in any::<bool>(),
        deleted_too in any::<bool>(),
        skip in 0usize..30,
        top in prop::option::of(0usize..30),
        page in 0usize..30,
    ) {
        use mesh_core::model::{Field, Filter, Query, Selection};
        let mut entries: Vec<Entry> = rows
            .iter()
            .enumerate()
            .map(|(n, &(title, value, deleted))| query_entry(n, title, value, deleted))
            .collect();
        entries.sort_by(|a, b| a.sync.id.cmp(&b.sync.id));
        let mut q = Query::new().skip(skip);
        q.top = top;
        q.include_deleted = deleted_too;
        if filtered {
            q = q.filter(Filter::ne(Field::content("n"), serde_json::json!(0)));
        }
        if let Some((by_title, desc)) = order {
            q = q.order_by(if by_title { Field::Title } else { Field::content("n") }, desc);
        }
        // The whole feed at once.
        let mut all = q.clone();
        all.skip = 0;
        all.top = None;
        let matching = all.run(entries.clone());
        let effective_top = top.unwrap_or(page);
        let want: Vec<Entry> = matching.iter().skip(skip).take(effective_top).cloned().collect();
        let want_more = matching.len() > skip + effective_top;

        let mut s = Selection::new(&q, page);
        let mut settled_at = None;
        for (i, e) in entries.iter().enumerate() {
            s.offer(e.clone());
            if settled_at.is_none() && s.is_settled() {
                settled_at = Some(i);
            }
        }
        let (got, more) = s.finish();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(more, want_more);

        // Stopping where it settled gives the same answer.
        if let Some(i) = settled_at {
            prop_assert!(order.is_none());
            let mut s = Selection::new(&q, page);
            for e in &entries[..=i] {
                s.offer(e.clone());
            }
            prop_assert_eq!(s.finish(), (want, want_more));
        }
    }
}
