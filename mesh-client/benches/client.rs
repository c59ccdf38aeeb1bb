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
            .sync_options(SyncOptions {
                auto: false,
                page_size: 1000,
                ..SyncOptions::default()
            })
    };
    let a = open("a").build().await.expect("client a");
    let b = open("b").build().await.expect("client b");
    let folder = a
        .create_folder("Bench", "app/bench")
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
        bench.iter(|| {
            i += 1;
            rt.block_on(async {
                let id: EntryId = "e050000".parse().expect("id");
                w.a.put_with_id(
                    &w.folder,
                    &w.feed,
                    id,
                    EntryDraft::new(format!("edit {i}"), kib_content(i)),
                )
                .await
                .expect("edit");
                let ra = w.a.sync_now().await.expect("a syncs");
                let rb = w.b.sync_now().await.expect("b syncs");
                assert_eq!((ra[0].1.sent, rb[0].1.received), (1, 1));
            })
        })
    });
    g.finish();
}

criterion_group!(benches, sync_benches);
criterion_main!(benches);
