//! Tests of the SQLite store: the shared store suite (file-backed and in memory), persistence
//! across reopen, corrupt and foreign files, and durability under `kill -9`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mesh_core::feedsync::{self, Stamp};
use mesh_core::id::{EntryId, RemoteId, ReplicaId};
use mesh_core::model::{Entry, EntryDraft, FeedKey};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{suite, Cursor, Store, StoreTxn, SyncState};
use mesh_core::time::Timestamp;
use mesh_core::CoreError;
use mesh_store::{SqliteStore, StoreError};

fn rid(s: &str) -> ReplicaId {
    s.parse().unwrap()
}

fn eid(s: &str) -> EntryId {
    s.parse().unwrap()
}

fn feed() -> FeedKey {
    "folder:f1/todos".parse().unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix(1_700_000_000 + secs).unwrap()
}

fn actor() -> Actor {
    Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap())
}

fn draft(title: &str) -> EntryDraft {
    EntryDraft::new(
        title,
        serde_json::json!({ "title": title, "pad": "x".repeat(200) }),
    )
}

/// A new entry as a peer would send it.
fn remote_entry(id: &str, title: &str) -> Entry {
    feedsync::create(
        eid(id),
        &Stamp::new("phone".parse().unwrap(), t(1)),
        draft(title).into_new_data("bob".parse().unwrap(), t(1)),
    )
}

fn total_entries(store: &SqliteStore) -> u64 {
    store.feeds().unwrap().iter().map(|f| f.entries).sum()
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Fills a store file with `n` entries and some sync state, and closes it.
fn make_store(path: &Path, n: usize) {
    let mut replica = Replica::new(SqliteStore::open(path, rid("maker")).unwrap());
    for i in 0..n {
        replica
            .create(
                &feed(),
                eid(&format!("e{i:05}")),
                draft("x"),
                &actor(),
                t(0),
            )
            .unwrap();
    }
    replica.into_store().close().unwrap();
}

fn expect_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> String {
    match r {
        Err(StoreError::Corrupt { reason, .. }) => reason,
        Err(e) => panic!("{what}: expected CorruptStore, got {e:?}"),
        Ok(v) => panic!("{what}: expected CorruptStore, but it succeeded: {v:?}"),
    }
}

// ---- the shared suite -------------------------------------------------------------------------

#[test]
fn sqlite_in_memory_passes_the_store_suite() {
    suite::run_all(|replica| SqliteStore::open_in_memory(replica).unwrap());
}

#[test]
fn sqlite_file_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    suite::run_all(|replica| {
        n += 1;
        SqliteStore::open(dir.path().join(format!("suite-{n}.db")), replica).unwrap()
    });
}

// ---- persistence ------------------------------------------------------------------------------

#[test]
fn reopen_keeps_data_counter_sync_states_and_replica_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let hub = RemoteId::new("hub").unwrap();
    let state = SyncState {
        remote_replica: Some(rid("hub-1")),
        pulled: Cursor(17),
        pushed: Cursor(3),
    };
    let first = {
        let mut replica = Replica::new(SqliteStore::open(&path, rid("laptop")).unwrap());
        let w = replica
            .create(&feed(), eid("a"), draft("a"), &actor(), t(0))
            .unwrap();
        replica
            .merge_batch(
                &feed(),
                vec![remote_entry("b", "b"), remote_entry("c", "c")],
                Some(&rid("phone")),
            )
            .unwrap();
        replica
            .update(&feed(), &eid("a"), draft("a2"), &actor(), t(5))
            .unwrap();
        let mut tx = replica.store_mut().begin().unwrap();
        tx.set_sync_state(&hub, &feed(), &state).unwrap();
        tx.commit().unwrap();
        // An uncommitted transaction is not persisted.
        let mut tx = replica.store_mut().begin().unwrap();
        tx.put(&feed(), remote_entry("ghost", "g"), None).unwrap();
        drop(tx);
        replica.into_store().close().unwrap();
        w
    };
    assert_eq!(first.seq, Cursor(1));

    let store = SqliteStore::open(&path, rid("someone-else")).unwrap();
    assert_eq!(store.replica_id(), rid("laptop"), "the replica id persists");
    assert_eq!(store.head(&feed()).unwrap(), Cursor(4));
    assert_eq!(total_entries(&store), 3);
    assert_eq!(store.get(&feed(), &eid("ghost")).unwrap(), None);
    assert_eq!(
        store
            .get(&feed(), &eid("a"))
            .unwrap()
            .unwrap()
            .content
            .title,
        "a2"
    );
    assert_eq!(store.sync_state(&hub, &feed()).unwrap(), state);
    let page = store
        .changes_since(&feed(), Cursor::ZERO, 10, Some(&rid("phone")))
        .unwrap();
    assert_eq!(
        page.changes.iter().map(|c| c.seq.0).collect::<Vec<_>>(),
        vec![4],
        "origins persist"
    );
    store.check_integrity().unwrap();
    drop(store);

    let mut replica = Replica::new(SqliteStore::open(&path, rid("laptop")).unwrap());
    let w = replica
        .create(&feed(), eid("d"), draft("d"), &actor(), t(9))
        .unwrap();
    assert_eq!(
        w.seq,
        Cursor(5),
        "the sequence counter persists (and the rolled-back put's number was reused)"
    );
}

#[test]
fn two_handles_on_one_file_share_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let mut a = Replica::new(SqliteStore::open(&path, rid("r")).unwrap());
    let mut b = Replica::new(SqliteStore::open(&path, rid("ignored")).unwrap());
    assert_eq!(b.id(), rid("r"));
    let w1 = a
        .create(&feed(), eid("x"), draft("x"), &actor(), t(0))
        .unwrap();
    let w2 = b
        .create(&feed(), eid("y"), draft("y"), &actor(), t(0))
        .unwrap();
    assert_eq!((w1.seq, w2.seq), (Cursor(1), Cursor(2)));
    assert!(a.get(&feed(), &eid("y")).unwrap().is_some());
    assert_eq!(a.store().head(&feed()).unwrap(), Cursor(2));
    assert_eq!(total_entries(a.store()), 2);
}

#[test]
fn an_empty_file_becomes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    write_file(&path, b"");
    let store = SqliteStore::open(&path, rid("r")).unwrap();
    assert_eq!(store.replica_id(), rid("r"));
    store.check_integrity().unwrap();
}

#[test]
fn the_store_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<SqliteStore>();
}

#[test]
fn an_unopenable_path_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    match SqliteStore::open(dir.path().join("missing/dir/x.db"), rid("r")) {
        Err(e @ StoreError::Sqlite { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("missing"), "{msg}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    match SqliteStore::open(dir.path(), rid("r")) {
        Err(e @ (StoreError::Sqlite { .. } | StoreError::Io { .. })) => {
            assert!(e.code() == "store" || e.code() == "io", "{e}");
            assert!(
                std::error::Error::source(&e).is_some(),
                "the cause is kept: {e:?}"
            );
        }
        other => panic!("a directory: expected a store error, got {other:?}"),
    }
}

// ---- corrupt and foreign files ----------------------------------------------------------------

#[test]
fn random_bytes_are_a_corrupt_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for (i, len) in [1usize, 15, 100, 512, 4096, 100_000]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("random-{i}.db"));
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        write_file(&path, &bytes);
        let reason = expect_corrupt(SqliteStore::open(&path, rid("r")), "random bytes");
        assert!(reason.contains("not a database"), "{reason}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "a file that is not a store is left untouched"
        );
    }
    // Text that starts like a SQLite header but is not one.
    let path = dir.path().join("fake-header.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192).map(|_| rng.u8(..)));
    write_file(&path, &bytes);
    expect_corrupt(SqliteStore::open(&path, rid("r")), "fake header");
}

#[test]
fn a_truncated_store_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    make_store(&path, 400);
    let full = std::fs::read(&path).unwrap();
    assert!(full.len() > 64 * 1024, "the store spans many pages");
    let page = usize::from(u16::from_be_bytes([full[16], full[17]]));
    let cuts = [
        full.len() / 2,
        full.len() - page,
        // Inside a page: the open's own reads may never reach it.
        full.len() - page / 2,
        full.len() - 1,
        page + 100,
        page,
        100,
        50,
    ];
    for keep in cuts {
        let cut = dir.path().join(format!("cut-{keep}.db"));
        write_file(&cut, &full[..keep]);
        expect_corrupt(
            SqliteStore::open(&cut, rid("r")),
            &format!("store truncated to {keep} bytes"),
        );
    }
}

#[test]
fn another_apps_database_is_not_a_mesh_store() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 3] = [
        (
            "tables",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);
             INSERT INTO notes (text) VALUES ('hello');",
        ),
        ("app-id", "PRAGMA application_id = 1234;"),
        ("version", "PRAGMA user_version = 3;"),
    ];
    for (name, sql) in cases {
        let path = dir.path().join(format!("other-{name}.db"));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(sql).unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let reason = expect_corrupt(SqliteStore::open(&path, rid("r")), name);
        assert_eq!(reason, "not a mesh store", "{name}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "another application's database is left untouched ({name})"
        );
        assert!(!PathBuf::from(format!("{}-wal", path.display())).exists());
    }
}

#[test]
fn a_newer_schema_is_too_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    make_store(&path, 3);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SqliteStore::SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteStore::open(&path, rid("r")) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!(found, SqliteStore::SCHEMA_VERSION + 1);
            assert_eq!(supported, SqliteStore::SCHEMA_VERSION);
        }
        other => panic!("expected StoreTooNew, got {other:?}"),
    }
}

#[test]
fn damaged_store_contents_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tamper = |name: &str, sql: &str| -> Result<SqliteStore, StoreError> {
        let path = dir.path().join(format!("{name}.db"));
        make_store(&path, 5);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        SqliteStore::open(&path, rid("r"))
    };
    let reason = expect_corrupt(
        tamper(
            "no-replica",
            "UPDATE meta SET value = '' WHERE key = 'replica_id'",
        ),
        "empty replica id",
    );
    assert!(reason.contains("replica id"), "{reason}");
    let reason = expect_corrupt(
        tamper(
            "counter",
            "UPDATE meta SET value = 2 WHERE key = 'last_seq'",
        ),
        "counter behind the log",
    );
    assert!(reason.contains("sequence counter"), "{reason}");
    let reason = expect_corrupt(tamper("no-table", "DROP TABLE sync_state"), "missing table");
    assert!(reason.contains("sync_state"), "{reason}");
    let reason = expect_corrupt(
        tamper("bad-version", "PRAGMA user_version = -1"),
        "negative version",
    );
    assert!(reason.contains("version"), "{reason}");

    // Damage that opening does not look for surfaces as errors, never panics, and the full
    // check finds it.
    let store = tamper(
        "bad-body",
        "UPDATE entries SET body = '{oops' WHERE id = 'e00002'",
    )
    .unwrap();
    let err = store.get(&feed(), &eid("e00002")).unwrap_err();
    assert!(
        matches!(&err, CoreError::Store(m) if m.contains("e00002")),
        "{err:?}"
    );
    assert!(store.get(&feed(), &eid("e00001")).unwrap().is_some());
    assert!(store
        .changes_since(&feed(), Cursor::ZERO, 10, None)
        .is_err());
    assert!(store.list(&feed(), None, 10).is_err());
    // A body passed on without decoding is still checked to be one JSON value: a damaged one
    // must not go into an answer, nor change the answer around it.
    let err = store
        .encoded_changes_since(&feed(), Cursor::ZERO, 10, None)
        .unwrap_err();
    assert!(
        matches!(&err, CoreError::Store(m) if m.contains("e00002")),
        "{err:?}"
    );
    let page = store
        .encoded_changes_since(&feed(), Cursor::ZERO, 1, None)
        .unwrap();
    assert_eq!(page.changes.len(), 1, "the change before the damage reads");
    expect_corrupt(store.check_integrity(), "check_integrity on a bad body");
    let store = tamper(
        "spliced-body",
        r#"UPDATE entries SET body = '{}],"next":999,"more":false,"x":[{}' WHERE id = 'e00002'"#,
    )
    .unwrap();
    let err = store
        .encoded_changes_since(&feed(), Cursor::ZERO, 10, None)
        .unwrap_err();
    assert!(
        matches!(&err, CoreError::Store(m) if m.contains("e00002")),
        "{err:?}"
    );

    let store = tamper(
        "wrong-id",
        "UPDATE entries SET id = 'zzz' WHERE id = 'e00003'",
    )
    .unwrap();
    assert!(store.get(&feed(), &eid("zzz")).is_err());

    let store = tamper("bad-count", "UPDATE feeds SET entries = 99").unwrap();
    let reason = expect_corrupt(store.check_integrity(), "check_integrity on a bad count");
    assert!(reason.contains("does not match"), "{reason}");
}

// ---- kill -9 ----------------------------------------------------------------------------------

const WRITER_ENV: &str = "MESH_TEST_KILL9_WRITER";
const WRITER_TEST: &str = "sqlite::kill9_writer_child";
/// The most entries one transaction of the writer adds.
const MAX_BATCH: u64 = 8;

fn writer_id(i: u64) -> EntryId {
    eid(&format!("w{i:06}"))
}

/// Not a test on its own: the body of the child process of
/// [`kill_9_loses_no_acknowledged_write`], which runs only when the environment names a store.
/// It writes to the store in a loop and prints `ack <entries>` after every commit.
#[test]
fn kill9_writer_child() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path), rid("writer")).unwrap();
    let mut count = total_entries(&store);
    let mut replica = Replica::new(store);
    let peer = rid("phone");
    let mut out = std::io::stdout().lock();
    for round in 0u64..1_000_000 {
        match round % 4 {
            0 => {
                replica
                    .create(
                        &feed(),
                        writer_id(count),
                        draft("created"),
                        &actor(),
                        t(round as i64),
                    )
                    .unwrap();
                count += 1;
            }
            3 if count > 0 => {
                // An update: moves an entry to the end of the log, adds none.
                replica
                    .update(
                        &feed(),
                        &writer_id(round % count),
                        draft("updated"),
                        &actor(),
                        t(round as i64),
                    )
                    .unwrap();
            }
            _ => {
                let n = 1 + round % (MAX_BATCH - 1);
                let mut batch: Vec<Entry> = (count..count + n)
                    .map(|i| remote_entry(writer_id(i).as_str(), "merged"))
                    .collect();
                if count > 0 {
                    // A newer version of an existing entry, in the same transaction.
                    let old = replica
                        .get(&feed(), &writer_id(count / 2))
                        .unwrap()
                        .unwrap();
                    let newer = feedsync::update(
                        &old,
                        &Stamp::new("phone".parse().unwrap(), t(round as i64 + 1)),
                        draft("merged update").into_new_data("bob".parse().unwrap(), t(1)),
                        false,
                    )
                    .unwrap();
                    batch.push(newer);
                }
                replica.merge_batch(&feed(), batch, Some(&peer)).unwrap();
                count += n;
            }
        }
        // The write is acknowledged only once commit has returned.
        if writeln!(out, "ack {count}")
            .and_then(|()| out.flush())
            .is_err()
        {
            std::process::exit(0); // The parent is gone.
        }
    }
}

/// Spawns the writer on `path`, lets it acknowledge `acks` transactions, and kills it with
/// SIGKILL. Returns the entry count of the last acknowledgement.
fn write_then_kill(path: &Path, acks: usize) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([WRITER_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0;
    let mut last = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("ack ") {
            last = Some(n.parse::<u64>().unwrap());
            seen += 1;
            if seen >= acks {
                break;
            }
        }
    }
    // Child::kill sends SIGKILL on Unix: no destructor, no checkpoint, no clean close.
    let _ = child.kill();
    let status = child.wait().unwrap();
    // The writer does not wait for us: acknowledgements it wrote before the kill may still
    // be in the pipe, and the last of them is what it acknowledged.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("ack ") {
            last = Some(n.parse::<u64>().unwrap());
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        seen >= acks,
        "the writer stopped after {seen} of {acks} acknowledgements ({status}):\n{err}"
    );
    last.unwrap()
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.db");
    let seed = fastrand::u64(..);
    println!("kill -9 test seed: {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut before = 0;
    for round in 0..5 {
        let acked = write_then_kill(&path, rng.usize(1..60));
        let ctx = format!("round {round}, seed {seed}");
        assert!(acked > before, "{ctx}: the writer made progress");

        let store = SqliteStore::open(&path, rid("parent"))
            .unwrap_or_else(|e| panic!("{ctx}: the store does not open after kill -9: {e}"));
        assert_eq!(store.replica_id(), rid("writer"), "{ctx}");
        store
            .check_integrity()
            .unwrap_or_else(|e| panic!("{ctx}: integrity: {e}"));
        let total = total_entries(&store);
        assert!(
            total >= acked,
            "{ctx}: {total} entries, but {acked} were acknowledged"
        );
        assert!(
            total <= acked + MAX_BATCH,
            "{ctx}: {total} entries after {acked} acknowledged: more than one transaction in flight?"
        );
        for i in 0..acked {
            assert!(
                store.get(&feed(), &writer_id(i)).unwrap().is_some(),
                "{ctx}: acknowledged entry {i} is lost"
            );
        }
        // The change log holds every entry exactly once, in increasing order.
        let mut ids = HashSet::new();
        let mut since = Cursor::ZERO;
        loop {
            let page = store.changes_since(&feed(), since, 97, None).unwrap();
            for c in &page.changes {
                assert!(c.seq > since, "{ctx}: log out of order");
                since = c.seq;
                assert!(
                    ids.insert(c.entry.sync.id.clone()),
                    "{ctx}: {} appears twice in the log",
                    c.entry.sync.id
                );
                assert_eq!(
                    store.get(&feed(), &c.entry.sync.id).unwrap().as_ref(),
                    Some(&c.entry),
                    "{ctx}: the log and the entry disagree"
                );
            }
            since = page.next;
            if !page.more {
                break;
            }
        }
        assert_eq!(ids.len() as u64, total, "{ctx}: every entry is in the log");
        assert_eq!(since, store.head(&feed()).unwrap(), "{ctx}");
        println!("{ctx}: acked {acked}, found {total}");
        before = total;
    }
}

/// A file of schema version 1 (changes numbered replica-wide only) opens migrated: every
/// position a remote may hold stays valid, and new changes continue per feed after the feed's
/// head, so nobody's cursor skips or repeats a change.
#[test]
fn a_version_1_store_keeps_its_positions_and_continues_them_per_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let (a, b): (FeedKey, FeedKey) = (feed(), "folder:f1/notes".parse().unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(mesh_store::sqlite::MIGRATIONS[0])
            .unwrap();
        conn.pragma_update(None, "application_id", SqliteStore::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('replica_id', 'old-hub');
             UPDATE meta SET value = 3 WHERE key = 'last_seq';
             INSERT INTO feeds (feed_id, key, head, entries) VALUES
                (1, 'folder:f1/todos', 3, 2), (2, 'folder:f1/notes', 2, 1);",
        )
        .unwrap();
        // a: changes 1 and 3; b: change 2 (as version 1 numbered them).
        for (seq, feed_id, id) in [(1, 1, "a1"), (2, 2, "b1"), (3, 1, "a2")] {
            let body = serde_json::to_string(&remote_entry(id, id)).unwrap();
            conn.execute(
                "INSERT INTO entries (seq, feed_id, id, origin, body) VALUES (?1, ?2, ?3, NULL, ?4)",
                rusqlite::params![seq, feed_id, id, body],
            )
            .unwrap();
        }
    }
    let mut store = SqliteStore::open(&path, rid("new")).unwrap();
    assert_eq!(store.replica_id(), rid("old-hub"));
    store.check_integrity().unwrap();
    let seqs = |store: &SqliteStore, f: &FeedKey, since: u64| -> Vec<u64> {
        let page = store.changes_since(f, Cursor(since), 10, None).unwrap();
        page.changes.iter().map(|c| c.seq.0).collect()
    };
    assert_eq!(
        (store.head(&a).unwrap(), store.head(&b).unwrap()),
        (Cursor(3), Cursor(2))
    );
    assert_eq!(seqs(&store, &a, 0), vec![1, 3], "positions are kept");
    assert_eq!(
        seqs(&store, &a, 1),
        vec![3],
        "a cursor held before still resumes"
    );
    let mut tx = store.begin().unwrap();
    let pa = tx.put(&a, remote_entry("a3", "a3"), None).unwrap();
    let pb = tx.put(&b, remote_entry("b2", "b2"), None).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        (pa, pb),
        (Cursor(4), Cursor(3)),
        "new changes continue after each feed's own head"
    );
    assert_eq!(seqs(&store, &a, 3), vec![4]);
    assert_eq!(seqs(&store, &b, 2), vec![3]);
    let moved = |f: &FeedKey| store.feed_moved(f).unwrap().map(|m| (m.head.0, m.seq));
    assert_eq!(
        (moved(&a), moved(&b)),
        (Some((4, 4)), Some((3, 5))),
        "replica-wide numbers continue after the old counter"
    );
    store.check_integrity().unwrap();
}

/// A file of schema version 2 (before the index of member records) opens with every member
/// record it holds indexed, deleted ones too, and other feeds' entries left out.
#[test]
fn a_version_2_store_opens_with_its_member_records_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for step in &mesh_store::sqlite::MIGRATIONS[..2] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "application_id", SqliteStore::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('replica_id', 'old-hub');
             UPDATE meta SET value = 4 WHERE key = 'last_seq';
             INSERT INTO feeds (feed_id, key, head, entries, seq) VALUES
                (1, 'folder:f1/members', 2, 2, 2), (2, 'folder:f2/members', 1, 1, 3),
                (3, 'folder:f2/todos', 1, 1, 4);",
        )
        .unwrap();
        let gone = mesh_core::feedsync::delete(
            &remote_entry("bob", "bob"),
            &mesh_core::feedsync::Stamp::new(
                "dev-b".parse().unwrap(),
                mesh_core::time::Timestamp::from_unix(1_700_000_009).unwrap(),
            ),
        )
        .unwrap();
        for (seq, feed_id, pos, e) in [
            (1, 1, 1, remote_entry("ann", "ann")),
            (2, 1, 2, remote_entry("bob", "bob")),
            (3, 2, 1, gone),
            (4, 3, 1, remote_entry("carol", "carol")),
        ] {
            conn.execute(
                "INSERT INTO entries (seq, feed_id, id, origin, body, pos)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
                rusqlite::params![
                    seq,
                    feed_id,
                    e.sync.id.as_str(),
                    serde_json::to_string(&e).unwrap(),
                    pos
                ],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path, rid("new")).unwrap();
    store.check_integrity().unwrap();
    let folders = |u: &str| -> Vec<String> {
        let user: mesh_core::id::UserId = u.parse().unwrap();
        store
            .member_folders(&user)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(folders("ann"), ["f1"]);
    assert_eq!(folders("bob"), ["f1", "f2"], "a deleted record counts");
    assert!(folders("carol").is_empty(), "not a members feed");
}

/// The index of member records is checked with the rest of the file: a record it misses, or
/// one it names that the file does not hold, is reported as damage.
#[test]
fn a_member_index_that_does_not_match_its_records_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("members.db");
    {
        let mut store = SqliteStore::open(&path, rid("hub")).unwrap();
        let mut tx = store.begin().unwrap();
        let members: FeedKey = "folder:f1/members".parse().unwrap();
        tx.put(&members, remote_entry("ann", "ann"), None).unwrap();
        tx.commit().unwrap();
        store.check_integrity().unwrap();
    }
    for (damage, what) in [
        ("DELETE FROM members", "a record left out"),
        (
            "INSERT INTO members (member, feed_id) VALUES ('mallory', 1)",
            "a record made up",
        ),
    ] {
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        rusqlite::Connection::open(&copy)
            .unwrap()
            .execute_batch(damage)
            .unwrap();
        let err = SqliteStore::open(&copy, rid("hub"))
            .unwrap()
            .check_integrity()
            .unwrap_err();
        assert!(err.to_string().contains("member records"), "{what}: {err}");
        std::fs::remove_file(&copy).unwrap();
    }
}

/// A new replica file takes 8 KiB pages (large commits append whole pages: fewer writes per
/// byte); a file made with SQLite's default 4 KiB pages keeps them and opens as before.
#[test]
fn new_files_take_large_pages_and_old_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |path: &Path| {
        rusqlite::Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let new = dir.path().join("new.db");
    make_store(&new, 3);
    assert_eq!(page_size(&new), 8_192);

    // A store from before, with 4 KiB pages.
    let old = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&old).unwrap();
        c.pragma_update(None, "page_size", 4_096).unwrap();
        c.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
    }
    make_store(&old, 3);
    assert_eq!(page_size(&old), 4_096);
    let store = SqliteStore::open(&old, rid("other")).unwrap();
    assert_eq!(total_entries(&store), 3);
}

/// A file cut inside a page is refused at open by its size alone, but not while a log beside
/// it holds something: a writer may be extending the file that moment, or SQLite has a crash
/// to recover from, and the file's size is then SQLite's to judge.
#[test]
fn a_size_inside_a_page_is_judged_only_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    make_store(&path, 50);
    let full = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.db");
    write_file(&cut, &full[..full.len() - 1]);
    let reason = expect_corrupt(SqliteStore::open(&cut, rid("r")), "cut inside a page");
    assert!(reason.contains("whole number"), "{reason}");

    let mut log = cut.as_os_str().to_owned();
    log.push("-wal");
    write_file(Path::new(&log), &[0; 32]);
    if let Err(e) = SqliteStore::open(&cut, rid("r")) {
        assert!(!e.to_string().contains("whole number"), "{e}");
    }
}

/// A step of [`the_member_index_agrees_with_the_records`].
#[derive(Debug, Clone)]
enum MemberStep {
    /// Writes the record of user `.1` (a deleted one when `.3`) in folder `.0`'s `members`
    /// feed when `.2`, else in its `todos` feed; rolled back when `.4`.
    Write(usize, usize, bool, bool, bool),
    /// Purges feed `.1` of folder `.0`.
    Purge(usize, bool),
}

fn member_step() -> impl proptest::strategy::Strategy<Value = MemberStep> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0usize..3, 0usize..3, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(f, u, members, delete, rollback)| {
                MemberStep::Write(f, u, members, delete, rollback)
            }),
        1 => (0usize..3, any::<bool>()).prop_map(|(f, m)| MemberStep::Purge(f, m)),
    ]
}

/// Runs `steps` on `store`, checking after each that `member_folders` lists, for every user,
/// exactly the folders whose `members` feed holds the user's record, and `scope_feeds` each
/// folder's listed feeds.
fn check_member_index<S: Store>(
    store: &mut S,
    steps: &[MemberStep],
) -> Result<(), proptest::test_runner::TestCaseError> {
    use mesh_core::id::{FolderId, UserId};
    use mesh_core::model::Scope;
    use proptest::prelude::*;
    let folders: Vec<FolderId> = ["f", "f/x", "f-1"].map(|f| f.parse().unwrap()).to_vec();
    let users: Vec<UserId> = ["ann", "bob", "ann/x"].map(|u| u.parse().unwrap()).to_vec();
    let key = |f: usize, members: bool| -> FeedKey {
        format!(
            "folder:{}/{}",
            folders[f],
            if members { "members" } else { "todos" }
        )
        .parse()
        .unwrap()
    };
    let mut secs = 1;
    for s in steps {
        match *s {
            MemberStep::Write(f, u, members, delete, rollback) => {
                let mut e = remote_entry(users[u].as_str(), "m");
                if delete {
                    secs += 1;
                    e = feedsync::delete(&e, &Stamp::new("phone".parse().unwrap(), t(secs)))
                        .unwrap();
                }
                let mut tx = store.begin().unwrap();
                tx.put(&key(f, members), e, None).unwrap();
                if !rollback {
                    tx.commit().unwrap();
                }
            }
            MemberStep::Purge(f, members) => {
                store.purge_feed(&key(f, members)).unwrap();
            }
        }
        for u in &users {
            let mut want: Vec<FolderId> = store
                .feeds()
                .unwrap()
                .into_iter()
                .filter_map(|h| h.feed.members_folder().cloned())
                .filter(|f| {
                    let id = u.as_str().parse().unwrap();
                    store.get(&FeedKey::members(f), &id).unwrap().is_some()
                })
                .collect();
            want.sort();
            prop_assert_eq!(
                store.member_folders(u).unwrap(),
                want,
                "{} after {:?}",
                u,
                s
            );
        }
        for f in &folders {
            let scope = Scope::Folder(f.clone());
            let mut want: Vec<_> = store
                .feeds()
                .unwrap()
                .into_iter()
                .filter(|h| h.feed.scope == scope)
                .collect();
            want.sort_by(|a, b| a.feed.cmp(&b.feed));
            prop_assert_eq!(
                store.scope_feeds(&scope).unwrap(),
                want,
                "{} after {:?}",
                f,
                s
            );
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(48))]
    /// Whatever member records are written, deleted, rolled back or purged, the store's index
    /// of them agrees with the records themselves (in memory and on SQLite), and so does the
    /// listing of each folder's feeds, with folder and user ids that go on with a `/`.
    #[test]
    fn the_member_index_agrees_with_the_records(
        steps in proptest::collection::vec(member_step(), 1..24)
    ) {
        check_member_index(&mut mesh_core::store::MemoryStore::new(rid("m")), &steps)?;
        check_member_index(&mut SqliteStore::open_in_memory(rid("s")).unwrap(), &steps)?;
    }
}

/// One batch of a merge: per arrival, the entry (`0..3`), its versions by index into that
/// entry's versions (the first is sent as the winner, the rest as its conflicts, in that
/// order, whatever the winner rule says) and whether its JSON is made ahead.
type Arrivals = Vec<(usize, Vec<usize>, bool)>;

fn arrivals() -> impl proptest::strategy::Strategy<Value = Arrivals> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (
            0usize..3,
            proptest::collection::vec(0usize..6, 1..4),
            any::<bool>(),
        ),
        1..4,
    )
}

/// Version `v` of entry `e`: 0 is its creation; 1 to 4 are edits of it on four devices at
/// once (each a conflict of the others); 5 is a later edit of edit 1.
fn version(e: usize, v: usize) -> Entry {
    let base = remote_entry(&format!("x{e}"), "base");
    let on = |device: usize, secs: i64| Stamp::new(format!("d{device}").parse().unwrap(), t(secs));
    let edit = |item: &Entry, device: usize, secs: i64| {
        let data = draft(&format!("e{e} by d{device} at {secs}"))
            .into_new_data("bob".parse().unwrap(), t(secs));
        feedsync::update(item, &on(device, secs), data, false).unwrap()
    };
    match v {
        0 => base,
        5 => edit(&edit(&base, 1, 2), 1, 9),
        v => edit(&base, v, 1 + v as i64),
    }
}

/// A permissive gate: every entry and every merge passes.
struct Open;

impl mesh_core::replica::MergeGate for Open {
    fn before(&mut self, _: Option<&Entry>, _: &Entry) -> mesh_core::Result<()> {
        Ok(())
    }
    fn after(
        &mut self,
        _: Option<&Entry>,
        _: &feedsync::Merged<mesh_core::model::EntryData>,
    ) -> mesh_core::Result<()> {
        Ok(())
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(96))]
    /// Entries merged with their JSON made ahead are stored exactly as the store would encode
    /// what it holds, however their versions were ordered or merged with local ones; and the
    /// store ends holding what an in-memory replica that was given no JSON holds. Both merges
    /// that take JSON made ahead are held to it: a hub's (`merge_batch_filtered`) and a
    /// puller's (`merge_batch_with_state`).
    #[test]
    fn json_made_ahead_is_stored_only_when_it_is_what_is_stored(
        batches in proptest::collection::vec(arrivals(), 1..6)
    ) {
        use mesh_core::store::Incoming;
        use proptest::prelude::*;
        let mut sqlite = Replica::new(SqliteStore::open_in_memory(rid("s")).unwrap());
        let mut pulled = Replica::new(SqliteStore::open_in_memory(rid("p")).unwrap());
        let mut memory = Replica::new(mesh_core::store::MemoryStore::new(rid("m")));
        for batch in &batches {
            let mut seen = HashSet::new();
            let mut ahead = Vec::new();
            let mut plain = Vec::new();
            for (e, versions, encoded) in batch {
                if !seen.insert(*e) {
                    continue;
                }
                let mut vs = versions.iter().map(|&v| version(*e, v));
                let mut entry = vs.next().unwrap();
                entry.conflicts = vs
                    .filter(|v| !v.sync.same_version(&entry.sync))
                    .map(|v| v.into_versions().0)
                    .collect();
                entry.conflicts.dedup_by(|a, b| a.sync.same_version(&b.sync));
                plain.push(entry.clone());
                ahead.push(if *encoded {
                    Incoming::encoded(entry).unwrap()
                } else {
                    Incoming::from(entry)
                });
            }
            let merged = pulled
                .merge_batch_with_state(&feed(), ahead.clone(), None, None)
                .unwrap();
            let judged = sqlite
                .merge_batch_filtered(&feed(), ahead, None, &mut Open)
                .unwrap();
            let plain: Vec<Incoming> = plain.into_iter().map(Incoming::from).collect();
            let expected = memory
                .merge_batch_filtered(&feed(), plain, None, &mut Open)
                .unwrap();
            let reports: Vec<_> = expected.iter().map(|(report, _)| report.clone()).collect();
            prop_assert_eq!(judged, expected);
            prop_assert_eq!(merged, reports);
        }
        let entries = memory.store().feeds().unwrap().iter().map(|f| f.entries).sum::<u64>();
        for replica in [&sqlite, &pulled] {
            let page = replica
                .store()
                .encoded_changes_since(&feed(), Cursor::ZERO, 100, None)
                .unwrap();
            for change in &page.changes {
                let held: Entry = serde_json::from_str(change.entry.get()).unwrap();
                prop_assert_eq!(change.entry.get(), serde_json::to_string(&held).unwrap());
                let kept = memory.store().get(&feed(), &held.sync.id).unwrap();
                prop_assert_eq!(Some(&held), kept.as_ref());
            }
            prop_assert_eq!(page.changes.len() as u64, entries);
        }
    }
}
