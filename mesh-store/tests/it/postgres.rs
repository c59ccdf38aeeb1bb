//! The PostgreSQL replica store: the core's conformance suite, concurrent writers on separate
//! connections (the late-commit rule), scope locks and notifications.
//!
//! These tests need a server: `eval "$(bash .ci/postgres.sh start)"` sets
//! `MESH_TEST_POSTGRES`. Without it they say so and pass without running, unless
//! `MESH_REQUIRE_POSTGRES=1` (set by `.ci/run`) makes a missing server a failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mesh_core::content::JsonContent;
use mesh_core::feedsync::{self, Stamp};
use mesh_core::id::ReplicaId;
use mesh_core::model::{Entry, EntryData, FeedKey};
use mesh_core::store::{suite, Cursor, Store, StoreTxn};
use mesh_core::time::Timestamp;
use mesh_store::postgres::{PgConfig, PgDatabase, PgListener, CHANGES_CHANNEL};

/// The test server's URL, or `None` (after saying so) when there is none.
pub fn server() -> Option<String> {
    match std::env::var("MESH_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("MESH_REQUIRE_POSTGRES").is_none(),
                "MESH_REQUIRE_POSTGRES is set but MESH_TEST_POSTGRES is not"
            );
            // Straight to the process's stderr: the test harness captures `eprintln!` of
            // passing tests, and a skip must be seen in a plain `cargo test`.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {}: no PostgreSQL server (run `eval \"$(bash .ci/postgres.sh start)\"`)",
                std::thread::current().name().unwrap_or("a test")
            );
            None
        }
    }
}

/// A schema no other test uses.
pub fn fresh_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// A migrated database in a fresh schema, holding replica `id`.
fn database(url: &str, id: &str) -> PgDatabase {
    let db =
        PgDatabase::connect(PgConfig::new(url).schema(fresh_schema()).max_connections(8)).unwrap();
    assert_eq!(
        db.migrate().unwrap(),
        mesh_store::postgres::MIGRATIONS.len()
    );
    assert_eq!(db.migrate().unwrap(), 0, "migrating twice applies nothing");
    db.open_replica(id.parse().unwrap()).unwrap();
    db
}

#[test]
fn the_store_suite_passes_on_postgres() {
    let Some(url) = server() else { return };
    // Every database stays open until the suite ends (each store holds its pool).
    let mut keep = Vec::new();
    suite::run_all(|rid: ReplicaId| {
        let db = database(&url, rid.as_str());
        let store = db.store().unwrap();
        keep.push(db);
        store
    });
}

fn feed() -> FeedKey {
    "folder:f/notes".parse().unwrap()
}

fn entry(id: &str, secs: i64) -> Entry {
    let when = Timestamp::from_unix(1_800_000_000 + secs).unwrap();
    feedsync::create(
        id.parse().unwrap(),
        &Stamp::new("dev".parse().unwrap(), when),
        EntryData {
            title: id.to_owned(),
            content: JsonContent::from(&serde_json::json!({ "n": secs })),
            media: None,
            author: "ann".parse().unwrap(),
            published: when,
            updated: when,
        },
    )
}

/// Two writers on two connections (as two hub processes): the one that takes the counter
/// first holds it until it commits, so the other's numbers are larger and a reader that saw
/// the second commit's number has seen the first's change too.
#[test]
fn a_late_commit_never_hides_behind_a_reader_cursor() {
    let Some(url) = server() else { return };
    let db = database(&url, "hub");
    let (db1, db2) = (db.clone(), db.clone());
    let (first_put, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (b1, g1) = (first_put.clone(), go.clone());
    // Writer 1 writes, then stalls before committing until writer 2 is seen waiting.
    let w1 = std::thread::spawn(move || {
        let mut s = db1.store().unwrap();
        let mut tx = s.begin().unwrap();
        let seq = tx.put(&feed(), entry("a", 1), None).unwrap();
        b1.wait();
        g1.wait();
        tx.commit().unwrap();
        seq
    });
    let w2 = std::thread::spawn(move || {
        first_put.wait();
        let mut s = db2.store().unwrap();
        let mut tx = s.begin().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let gate = std::thread::spawn(move || {
            // Writer 2 cannot get its number while writer 1 holds the counter.
            let blocked = done_rx.recv_timeout(Duration::from_millis(300)).is_err();
            go.wait();
            blocked
        });
        let seq = tx.put(&feed(), entry("b", 2), None).unwrap();
        done_tx.send(()).ok();
        tx.commit().unwrap();
        (seq, gate.join().unwrap())
    });
    let s1 = w1.join().unwrap();
    let (s2, blocked) = w2.join().unwrap();
    assert!(
        blocked,
        "the second writer waited for the first one's commit"
    );
    assert!(s1 < s2, "numbers follow commit order: {s1:?} < {s2:?}");
    let page = db
        .store()
        .unwrap()
        .changes_since(&feed(), Cursor::ZERO, 10, None)
        .unwrap();
    let seqs: Vec<u64> = page.changes.iter().map(|c| c.seq.0).collect();
    assert_eq!(seqs, vec![s1.0, s2.0]);
}

/// A commit notifies every listener with the feeds it changed; a rolled-back transaction
/// notifies no one.
#[test]
fn commits_notify_listeners_and_rollbacks_do_not() {
    let Some(url) = server() else { return };
    let db = database(&url, "hub");
    let mut listener = PgListener::listen(&db, &[&db.channel(CHANGES_CHANNEL)]).unwrap();
    let mut s = db.store().unwrap();
    let mut tx = s.begin().unwrap();
    tx.put(&"folder:f/other".parse().unwrap(), entry("x", 1), None)
        .unwrap();
    drop(tx); // rolled back
    let mut tx = s.begin().unwrap();
    tx.put(&feed(), entry("a", 1), None).unwrap();
    tx.put(&feed(), entry("b", 2), None).unwrap();
    tx.put(&"folder:f/other".parse().unwrap(), entry("y", 3), None)
        .unwrap();
    tx.commit().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut next = || {
        let n = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), listener.recv()).await
            })
            .expect("a notification within 10 s")
            .expect("the listener is open");
        assert_eq!(n.channel, db.channel(CHANGES_CHANNEL));
        n.payload
    };
    // "<replica-wide number> <head> <feed>", in the order of the numbers: the rolled-back
    // numbers were given out again, and each feed counts its own positions.
    assert_eq!(
        (next(), next()),
        (format!("2 2 {}", feed()), "3 1 folder:f/other".to_owned()),
        "only the committed feeds, each with its latest number and its head"
    );
    let feeds = s.feeds().unwrap();
    assert_eq!(
        feeds.iter().map(|f| f.entries).collect::<Vec<_>>(),
        vec![2, 1]
    );
}

/// A scope lock is held until its store is dropped, across connections.
#[test]
fn scope_locks_exclude_other_connections_until_dropped() {
    let Some(url) = server() else { return };
    let db = database(&url, "hub");
    let (a, b) = (db.clone(), db.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut s = a.store().unwrap();
        s.lock_scope("folder:f").unwrap();
        tx.send(()).unwrap();
        std::thread::park_timeout(Duration::from_millis(300));
        let t = Instant::now();
        drop(s);
        t
    });
    rx.recv().unwrap();
    let waiter = std::thread::spawn(move || {
        let mut s = b.store().unwrap();
        s.lock_scope("folder:f").unwrap();
        Instant::now()
    });
    let released = holder.join().unwrap();
    let acquired = waiter.join().unwrap();
    assert!(
        acquired >= released,
        "the second lock waited for the first store to go"
    );
}

/// A database migrated by a newer build is refused, not used.
#[test]
fn a_newer_schema_is_refused() {
    let Some(url) = server() else { return };
    let schema = fresh_schema();
    let db = PgDatabase::connect(PgConfig::new(url.clone()).schema(schema.clone())).unwrap();
    db.migrate().unwrap();
    let (found, supported) = db.version().unwrap();
    assert_eq!(found, supported);
    // A later build recorded a migration this one does not know.
    let other = PgDatabase::connect(PgConfig::new(url).schema(schema)).unwrap();
    drop(other);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &std::env::var("MESH_TEST_POSTGRES").unwrap(),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let schema = format!("{db:?}");
        let schema = schema.split('"').nth(1).unwrap().to_owned();
        client
            .batch_execute(&format!(
                "INSERT INTO {schema}.mesh_migrations (version) VALUES ({})",
                supported + 1
            ))
            .await
            .unwrap();
    });
    match db.check_version() {
        Err(mesh_store::StoreError::TooNew { found, .. }) => assert_eq!(found, supported + 1),
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert!(matches!(
        db.migrate(),
        Err(mesh_store::StoreError::TooNew { .. })
    ));
    assert!(matches!(
        db.open_replica("hub".parse().unwrap()),
        Err(mesh_store::StoreError::TooNew { .. })
    ));
}

/// Processes count each other by heartbeat; one that stopped beating drops out.
#[test]
fn heartbeats_count_the_live_processes() {
    let Some(url) = server() else { return };
    let db = database(&url, "hub");
    assert_eq!(db.heartbeat("p1", 1_000, 10).unwrap(), 1);
    assert_eq!(db.heartbeat("p2", 1_001, 10).unwrap(), 2);
    assert_eq!(db.heartbeat("p1", 1_005, 10).unwrap(), 2);
    assert_eq!(
        db.heartbeat("p1", 1_012, 10).unwrap(),
        1,
        "p2 was last seen 11 s ago"
    );
}

#[test]
fn epochs_span_a_run_of_the_processes_and_end_with_the_last() {
    let Some(url) = server() else { return };
    let db = database(&url, "hub");
    // p1 starts alone: a new epoch, nothing continued.
    let (e1, cont) = db.begin_epoch("p1", "e1", 1_000, 6, 64).unwrap();
    assert_eq!((e1.as_str(), cont.len()), ("e1", 0));
    // p2 starts while p1 is alive: it joins e1.
    let (e, _) = db.begin_epoch("p2", "e2", 1_002, 6, 64).unwrap();
    assert_eq!(e, "e1");
    // p1 stops while p2 serves: e1 goes on.
    assert!(!db.end_epoch("p1", "e1", 1_003, 6).unwrap());
    // p2, the last, stops: e1 ends cleanly, and the next run continues it.
    assert!(db.end_epoch("p2", "e1", 1_004, 6).unwrap());
    let (e3, cont) = db.begin_epoch("p3", "e3", 1_100, 6, 64).unwrap();
    assert_eq!((e3.as_str(), cont), ("e3", vec!["e1".to_owned()]));
    // p3 dies without stopping (or the database is restored from a dump taken now): long
    // after, a new process begins an epoch that does not continue e3.
    let (e4, cont) = db.begin_epoch("p4", "e4", 2_000, 6, 64).unwrap();
    assert_eq!((e4.as_str(), cont), ("e4", vec!["e1".to_owned()]));
    // A process seen long ago does not keep an epoch alive.
    let (e5, _) = db.begin_epoch("p5", "e5", 3_000, 6, 64).unwrap();
    assert_eq!(e5, "e5");
}

/// A connection to a new schema `schema` of the test server holding the database as schema
/// version `version` left it (its first migrations, recorded as applied), to migrate from
/// there. Runs on the caller's runtime.
pub async fn database_at(url: &str, schema: &str, version: usize) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema};"
        ))
        .await
        .unwrap();
    for step in &mesh_store::postgres::MIGRATIONS[..version] {
        client.batch_execute(step).await.unwrap();
    }
    client
        .batch_execute(
            "CREATE TABLE mesh_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now());",
        )
        .await
        .unwrap();
    for v in 1..=version as i32 {
        client
            .execute("INSERT INTO mesh_migrations (version) VALUES ($1)", &[&v])
            .await
            .unwrap();
    }
    client
}

/// A database as schema version `version` left it, holding what `setup` writes and
/// `entries` (feed id, position, entry id; the position in column `pos_column`), migrated by
/// this build and opened.
fn migrated_from(
    url: &str,
    version: usize,
    setup: &str,
    pos_column: &str,
    entries: &[(i64, i64, &str)],
) -> PgDatabase {
    let schema = fresh_schema();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = database_at(url, &schema, version).await;
        client.batch_execute(setup).await.unwrap();
        let insert = format!(
            "INSERT INTO mesh_entries (feed_id, id, {pos_column}, origin, body)
             VALUES ($1, $2, $3, NULL, $4)"
        );
        for (feed_id, pos, id) in entries {
            let body = serde_json::to_string(&entry(id, *pos)).unwrap();
            client
                .execute(&insert, &[feed_id, id, pos, &body])
                .await
                .unwrap();
        }
    });
    let db = PgDatabase::connect(PgConfig::new(url).schema(schema)).unwrap();
    assert_eq!(
        db.migrate().unwrap(),
        mesh_store::postgres::MIGRATIONS.len() - version
    );
    db.open_replica("new".parse().unwrap()).unwrap();
    db
}

/// A database of schema version 6 (before the index of member records) migrates with every
/// member record it holds indexed, and other feeds' entries left out.
#[test]
fn a_version_6_database_migrates_with_its_member_records_indexed() {
    let Some(url) = server() else { return };
    let db = migrated_from(
        &url,
        6,
        "INSERT INTO mesh_replica (id, last_seq) VALUES ('old-hub', 4);
         INSERT INTO mesh_feeds (feed_id, key, head, entries, seq) VALUES
            (1, 'folder:f1/members', 2, 2, 2), (2, 'folder:f2/members', 1, 1, 3),
            (3, 'folder:f2/todos', 1, 1, 4);",
        "pos",
        &[(1, 1, "ann"), (1, 2, "bob"), (2, 1, "bob"), (3, 1, "carol")],
    );
    let s = db.store().unwrap();
    let folders = |u: &str| -> Vec<String> {
        s.member_folders(&u.parse().unwrap())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(folders("ann"), ["f1"]);
    assert_eq!(folders("bob"), ["f1", "f2"]);
    assert!(folders("carol").is_empty(), "not a members feed");
}

/// A database of schema version 4 (changes numbered replica-wide only) migrates keeping
/// every position a remote may hold; new changes continue per feed after the feed's head.
#[test]
fn a_version_4_database_keeps_its_positions_and_continues_them_per_feed() {
    let Some(url) = server() else { return };
    // notes: changes 1 and 3; other: change 2 (as version 4 numbered them).
    let db = migrated_from(
        &url,
        4,
        "INSERT INTO mesh_replica (id, last_seq) VALUES ('old-hub', 3);
         INSERT INTO mesh_feeds (feed_id, key, head, entries) VALUES
            (1, 'folder:f/notes', 3, 2), (2, 'folder:f/other', 2, 1);",
        "seq",
        &[(1, 1, "a1"), (2, 2, "b1"), (1, 3, "a2")],
    );
    let mut s = db.store().unwrap();
    let (a, b): (FeedKey, FeedKey) = (feed(), "folder:f/other".parse().unwrap());
    let positions = |s: &mesh_store::postgres::PgStore, f: &FeedKey, since: u64| -> Vec<u64> {
        let page = s.changes_since(f, Cursor(since), 10, None).unwrap();
        page.changes.iter().map(|c| c.seq.0).collect()
    };
    assert_eq!(
        (s.head(&a).unwrap(), s.head(&b).unwrap()),
        (Cursor(3), Cursor(2))
    );
    assert_eq!(positions(&s, &a, 0), vec![1, 3], "positions are kept");
    assert_eq!(
        positions(&s, &a, 1),
        vec![3],
        "a cursor held before still resumes"
    );
    let mut tx = s.begin().unwrap();
    let pa = tx.put(&a, entry("a3", 4), None).unwrap();
    let pb = tx.put(&b, entry("b2", 5), None).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        (pa, pb),
        (Cursor(4), Cursor(3)),
        "new changes continue after each feed's own head"
    );
    assert_eq!(positions(&s, &b, 2), vec![3]);
    let moved = |f: &FeedKey| s.feed_moved(f).unwrap().map(|m| (m.head.0, m.seq));
    assert_eq!(
        (moved(&a), moved(&b)),
        (Some((4, 4)), Some((3, 5))),
        "replica-wide numbers continue after the old counter"
    );
}
