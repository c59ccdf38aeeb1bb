//! Benchmarks of mesh-client: sync through the in-process hub (and, with the SQLite store,
//! store writes against a plain rusqlite ceiling).
//!
//! ```text
//! cargo bench -p mesh-client --bench client
//! ```

#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mesh_client::store::StoreConfig;
use mesh_client::transport::InProcessHub;
use mesh_client::{MeshClient, SyncOptions};
use mesh_core::id::{EntryId, FeedName, FolderId};
use mesh_core::model::EntryDraft;

const ENTRIES: usize = 100_000;

fn kib_content(i: usize) -> serde_json::Value {
    serde_json::json!({ "n": i, "text": "x".repeat(1000) })
}

struct World {
    _dir: tempfile::TempDir,
    a: MeshClient,
    b: MeshClient,
    folder: FolderId,
    feed: FeedName,
}

fn store(dir: &std::path::Path, name: &str) -> StoreConfig {
    match std::env::var("MESH_BENCH_STORE").as_deref() {
        Ok("memory") => StoreConfig::Memory,
        Ok("sqlite-normal") => StoreConfig::SqliteWith(
            dir.join(format!("{name}.db")),
            mesh_client::store::Durability::Normal,
        ),
        _ => StoreConfig::Sqlite(dir.join(format!("{name}.db"))),
    }
}

/// Device A with `ENTRIES` entries of 1 KiB, device B empty, both of one user, one hub.
async fn world() -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = InProcessHub::new();
    let open = |device: &str| {
        MeshClient::builder()
            .user("ann".parse().expect("id"))
            .device(device.parse().expect("id"))
            .store(store(dir.path(), device))
            .remote(
                "hub".parse().expect("id"),
                hub.connect("ann".parse().expect("id")),
            )
            // Sync only when asked, so that setup writes are not synced behind the timer.
            .sync_options(SyncOptions::default().with_auto(false).with_page_size(1000))
    };
    let a = open("a").build().await.expect("client a");
    let b = open("b").build().await.expect("client b");
    let folder = a
        .create_folder("Bench", "app/bench".parse().unwrap())
        .await
        .expect("folder")
        .id;
    let feed = a
        .create_feed(&folder, "items".parse().expect("name"), "Items")
        .await
        .expect("feed");
    let drafts: Vec<(EntryId, EntryDraft)> = (0..ENTRIES)
        .map(|i| {
            (
                format!("e{i:06}").parse().expect("id"),
                EntryDraft::new(format!("item {i}"), kib_content(i)),
            )
        })
        .collect();
    a.put_many(&folder, &feed, drafts).await.expect("bulk put");
    World {
        _dir: dir,
        a,
        b,
        folder,
        feed,
    }
}

const BATCH: usize = 1000;

/// A plain rusqlite table of the same shape as the store's entry log, with the same pragmas:
/// the ceiling for inserting the same rows without any sync logic.
fn raw_db(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, feed_id INTEGER NOT NULL, id TEXT NOT NULL,
                               origin TEXT, body TEXT NOT NULL);
         CREATE UNIQUE INDEX entries_by_id ON entries (feed_id, id);
         CREATE INDEX entries_log ON entries (feed_id, seq);",
    )
    .expect("schema");
    conn
}

fn store_benches(c: &mut Criterion) {
    use mesh_client::store::SqliteStore;
    use mesh_core::model::FeedKey;
    use mesh_core::replica::{Actor, Replica};
    use mesh_core::time::Timestamp;

    let dir = tempfile::tempdir().expect("temp dir");
    let feed: FeedKey = "folder:bench/items".parse().expect("key");
    let actor = Actor::new("ann".parse().expect("id"), "a".parse().expect("id"));
    let when = Timestamp::from_unix(1_800_000_000).expect("time");
    let draft = |i: usize| EntryDraft::new(format!("item {i}"), kib_content(i));
    // The rows the raw insert writes: the same entries, serialized as the store does.
    let body = |i: usize| {
        let e = mesh_core::feedsync::create(
            format!("e{i:08}").parse().expect("id"),
            &mesh_core::feedsync::Stamp::new(actor.device.clone(), when),
            draft(i).into_new_data(actor.user.clone(), when),
        );
        serde_json::to_string(&e).expect("json")
    };

    let mut g = c.benchmark_group("sqlite_store");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(BATCH as u64));

    let raw = raw_db(&dir.path().join("raw.db"));
    let mut next = 0usize;
    g.bench_function("raw_rusqlite_insert_batch_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rows: Vec<(String, String)> =
                    (next..next + BATCH).map(|i| (format!("e{i:08}"), body(i))).collect();
                next += BATCH;
                let t = Instant::now();
                let tx = raw.unchecked_transaction().expect("tx");
                {
                    let mut st = tx
                        .prepare_cached("INSERT INTO entries (feed_id, id, origin, body) VALUES (1, ?1, NULL, ?2)")
                        .expect("prepare");
                    for (id, body) in &rows {
                        st.execute((id, body)).expect("insert");
                    }
                }
                tx.commit().expect("commit");
                total += t.elapsed();
            }
            total
        })
    });

    let mut store = Replica::new(
        SqliteStore::open(dir.path().join("store.db"), "a".parse().expect("id")).expect("store"),
    );
    let mut next = 0usize;
    g.bench_function("store_write_batch_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let drafts: Vec<(EntryId, EntryDraft)> = (next..next + BATCH)
                    .map(|i| (format!("e{i:08}").parse().expect("id"), draft(i)))
                    .collect();
                next += BATCH;
                let t = Instant::now();
                let w = store
                    .write_batch(&feed, drafts, &actor, when)
                    .expect("write");
                total += t.elapsed();
                assert_eq!(w.len(), BATCH);
            }
            total
        })
    });

    g.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    g.bench_function("raw_rusqlite_insert_single", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (id, body) = (format!("s{next:08}"), body(next));
                next += 1;
                let t = Instant::now();
                let tx = raw.unchecked_transaction().expect("tx");
                tx.prepare_cached(
                    "INSERT INTO entries (feed_id, id, origin, body) VALUES (1, ?1, NULL, ?2)",
                )
                .expect("prepare")
                .execute((&id, &body))
                .expect("insert");
                tx.commit().expect("commit");
                total += t.elapsed();
            }
            total
        })
    });
    let mut next = 0usize;
    g.bench_function("store_create_single", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id: EntryId = format!("s{next:08}").parse().expect("id");
                let d = draft(next);
                next += 1;
                let t = Instant::now();
                store.create(&feed, id, d, &actor, when).expect("create");
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn sync_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("sync_in_process");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(1));
    g.throughput(Throughput::Elements(ENTRIES as u64));
    g.bench_function("initial_100k_1KiB_a_hub_b", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let w = rt.block_on(world());
                let t = Instant::now();
                rt.block_on(async {
                    w.a.sync_now().await.expect("a syncs");
                    w.b.sync_now().await.expect("b syncs");
                });
                total += t.elapsed();
                let n = rt
                    .block_on(w.b.query(&w.folder, &w.feed, mesh_core::model::Query::new()))
                    .expect("query")
                    .len();
                assert_eq!(n, ENTRIES, "b received everything");
            }
            total
        })
    });
    g.finish();

    let w = rt.block_on(async {
        let w = world().await;
        w.a.sync_now().await.expect("a syncs");
        w.b.sync_now().await.expect("b syncs");
        w
    });
    let mut g = c.benchmark_group("sync_in_process");
    g.sample_size(50);
    let mut i = 0usize;
    g.bench_function("incremental_1_of_100k", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                total += rt.block_on(async {
                    let id: EntryId = "e050000".parse().expect("id");
                    let draft = EntryDraft::new(format!("edit {i}"), kib_content(i));
                    w.a.put_with_id(&w.folder, &w.feed, id, draft)
                        .await
                        .expect("edit");
                    // Timed: A pushes the change to the hub, B pulls it.
                    let t = Instant::now();
                    let ra = w.a.sync_now().await.expect("a syncs");
                    let rb = w.b.sync_now().await.expect("b syncs");
                    let elapsed = t.elapsed();
                    assert_eq!((ra[0].1.sent, rb[0].1.received), (1, 1));
                    elapsed
                });
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, store_benches, sync_benches);
criterion_main!(benches);
