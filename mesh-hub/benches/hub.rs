//! Benchmarks of a hub over loopback HTTP (the figures of issue 4):
//!
//! * initial sync of N entries of 1 KiB, device A → hub → device B (entries/s), and the CPU
//!   time per entry the devices' process and the hub process used in each phase;
//! * latency from a write on A to the change event on B (p50, p99);
//! * incremental sync of one entry, with only the writer and the receiver online (ms to the
//!   hub and to the receiver's change event, and bytes on the wire counted by TCP proxies:
//!   the writer's hop to the hub and the hub's to a receiving device, for repeated and for
//!   random content);
//! * resident memory of a hub holding many open notification streams.
//!
//! The hub runs as its own process (the `mesh-hub` binary, SQLite replica in a temporary
//! directory); the devices are `MeshClient`s with SQLite stores (full durability) in another
//! temporary directory on the same disk (`MESH_BENCH_DEVICE_STORE=memory` for in-memory ones)
//! and `HttpTransport`s. The initial sync is set beside a plain rusqlite insert of the same
//! rows, measured in the same run on the same disk.
//!
//! ```text
//! cargo bench -p mesh-hub --bench hub
//! MESH_BENCH_DURABILITY=normal cargo bench -p mesh-hub --bench hub   # the hub's --durability
//! MESH_BENCH_ENTRIES=20000 MESH_BENCH_WRITES=200 MESH_BENCH_STREAMS=200 cargo bench -p mesh-hub --bench hub
//! MESH_BENCH_ENTRIES=50 MESH_BENCH_ONLY=incremental cargo bench -p mesh-hub --bench hub   # bytes per hop
//! MESH_BENCH_ROUNDS=200 ...   # more incremental rounds (20 by default)
//! MESH_BENCH_WARMUP=300 ...   # one-entry writes made first, untimed (0 by default)
//! MESH_BENCH_DIRECT=1 ...     # the one-entry sync without the byte-counting proxies
//! ```
//!
//! `MESH_BENCH_WARMUP` lets the incremental sync be timed on older stores: those of the
//! writer, the hub and the receiver are young when it starts, and while an SQLite write-ahead
//! log still grows (up to its checkpoint size, about 4 MiB) a bare commit took about twice
//! as long on the benchmark machine as once the log is reused (see `docs/benchmarks.md`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use mesh_client::sync::SyncOptions;
use mesh_client::transport::{
    HttpTransport, Notification, SimConfig, SimNetwork, Transport, TransportError,
};
use mesh_client::{ChangeSource, Event, MeshClient};
use mesh_core::model::EntryDraft;
use mesh_core::sync::{Request, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{cpu_time_of, Error, HubProcess, NO_LIMITS};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- the hub process -------------------------------------------------------------------------

fn start_hub(dir: &Path) -> Result<HubProcess, Error> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mesh-hub"));
    command
        .arg("--data")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--log"])
        .arg(std::env::var("MESH_BENCH_HUB_LOG").unwrap_or_else(|_| "warn".into()))
        .arg("--durability")
        .arg(std::env::var("MESH_BENCH_DURABILITY").unwrap_or_else(|_| "full".into()))
        .args(NO_LIMITS)
        // MESH_BENCH_VERIFY=off measures the same run without signature checks.
        .args(
            (std::env::var("MESH_BENCH_VERIFY").as_deref() == Ok("off"))
                .then_some("--skip-signature-checks"),
        )
        .stderr(Stdio::inherit());
    HubProcess::spawn(command)
}

fn admin(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-hub"))
        .arg("--data")
        .arg(dir)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

// ---- a byte-counting TCP proxy ---------------------------------------------------------------

#[derive(Clone, Default)]
struct Counters {
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Counters {
    fn total(&self) -> u64 {
        self.up.load(Ordering::SeqCst) + self.down.load(Ordering::SeqCst)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Forwards a loopback port to `target`, counting the bytes each way.
async fn proxy(target: &str) -> Result<(String, Counters), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let target = target.trim_start_matches("http://").to_owned();
    let counters = Counters::default();
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, c.up.clone()));
            tokio::spawn(pipe(sr, cw, c.down.clone()));
        }
    });
    Ok((format!("http://{addr}"), counters))
}

/// A transport without notifications, so that only the sync session's own traffic is counted.
struct NoWatch(HttpTransport);

#[async_trait]
impl Transport for NoWatch {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.0.send(request).await
    }
    async fn send_pull(
        &self,
        request: Request,
        next: &mesh_client::transport::NextPage,
    ) -> Result<Response, TransportError> {
        self.0.send_pull(request, next).await
    }
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        Ok(futures::stream::pending().boxed())
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    // Enrollment and the identity check go through too: without a certificate the hub would
    // refuse every pushed entry (the pushes would still be counted, their entries not stored).
    async fn enroll(
        &self,
        device: &mesh_core::id::DeviceId,
        key: &mesh_core::trust::PublicKey,
    ) -> Result<mesh_core::trust::Enrollment, TransportError> {
        self.0.enroll(device, key).await
    }
    async fn whoami(&self) -> Result<Option<mesh_client::transport::Identity>, TransportError> {
        self.0.whoami().await
    }
}

fn options() -> SyncOptions {
    SyncOptions::default()
        .with_poll_interval(Duration::from_secs(3600))
        // MESH_BENCH_PAGE sets the entries per pull/push message (the client's default is
        // the most a hub gives, 1000; it was 500 before the thirty-first session).
        .with_page_size(env_usize("MESH_BENCH_PAGE", mesh_core::sync::MAX_PAGE as usize) as u32)
}

/// A device of `user` syncing with `remote`; on SQLite in `dir` unless
/// `MESH_BENCH_DEVICE_STORE=memory`.
async fn device(
    user: &str,
    id: &str,
    remote: impl Transport,
    dir: &Path,
) -> Result<MeshClient, Error> {
    let mut builder = MeshClient::builder()
        .user(user.parse()?)
        .device(id.parse()?)
        .remote("hub".parse()?, remote)
        .sync_options(options());
    if std::env::var("MESH_BENCH_DEVICE_STORE").as_deref() != Ok("memory") {
        builder = builder.store(mesh_client::store::StoreConfig::Sqlite(
            dir.join(format!("{id}.db")),
        ));
    }
    Ok(builder.build().await?)
}

/// The raw ceiling: `rows` inserted with plain rusqlite into a table of the store's entry
/// shape (same pragmas: WAL, synchronous FULL; same indexes), 1,000 per transaction. Rows/s.
fn raw_insert_rate(path: &Path, rows: &[(String, String)]) -> Result<f64, Error> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, feed_id INTEGER NOT NULL, id TEXT NOT NULL,
                               origin TEXT, body TEXT NOT NULL);
         CREATE UNIQUE INDEX entries_by_id ON entries (feed_id, id);
         CREATE INDEX entries_log ON entries (feed_id, seq);",
    )?;
    let t = Instant::now();
    for batch in rows.chunks(1000) {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO entries (feed_id, id, origin, body) VALUES (1, ?1, NULL, ?2)",
            )?;
            for (id, body) in batch {
                insert.execute(rusqlite::params![id, body])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows.len() as f64 / t.elapsed().as_secs_f64())
}

/// Waits for the end of a sync session of `events`' client.
async fn session_done(events: &mut BoxStream<'static, Event>) -> Result<(), Error> {
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = events.next().await {
            if let Event::Refused { reason, .. } = &e {
                return Err(format!("the hub refused a pushed entry: {reason}").into());
            }
            if let Event::SyncProgress { done: true, .. } = e {
                return Ok(());
            }
        }
        Err("event stream ended".into())
    })
    .await
    .map_err(|_| "timed out waiting for a session")?
}

fn kib_payload(i: usize) -> serde_json::Value {
    // About 1 KiB of JSON content per entry.
    json!({"n": i, "text": format!("{i:08}").repeat(126)})
}

/// The same size as [`kib_payload`], but random base64: what compression cannot shrink much
/// (6 bits of entropy per character), unlike repeated digits.
fn random_payload(i: usize) -> serde_json::Value {
    use base64::Engine;
    let bytes: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
        .take(756)
        .collect();
    json!({"n": i, "text": base64::engine::general_purpose::STANDARD.encode(bytes)})
}

/// Waits for `id`'s remote change event on a device and the end of the session that brought
/// it; returns when the change event came.
async fn change_received(
    events: &mut BoxStream<'static, Event>,
    id: &str,
) -> Result<Instant, Error> {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = None;
        while let Some(e) = events.next().await {
            match e {
                Event::EntryChanged {
                    id: got,
                    source: ChangeSource::Remote(_),
                    ..
                } if got.as_str() == id => seen = Some(Instant::now()),
                Event::SyncProgress { done: true, .. } => {
                    if let Some(at) = seen {
                        return Ok(at);
                    }
                }
                _ => {}
            }
        }
        Err("event stream ended".into())
    })
    .await
    .map_err(|_| "timed out waiting for a change")?
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run() -> Result<(), Error> {
    let entries = env_usize("MESH_BENCH_ENTRIES", 100_000);
    let writes = env_usize("MESH_BENCH_WRITES", 1_000);
    let streams = env_usize("MESH_BENCH_STREAMS", 1_000);
    println!("machine: {}", machine());

    // MESH_BENCH_DIR puts the hub's data elsewhere (e.g. /dev/shm, to take the disk out).
    let dir = match std::env::var("MESH_BENCH_DIR") {
        Ok(base) => tempfile::tempdir_in(base)?,
        Err(_) => tempfile::tempdir()?,
    };
    admin(dir.path(), &["user", "add", "ann"])?;
    let token_a = admin(dir.path(), &["device", "add", "ann", "a"])?;
    let token_b = admin(dir.path(), &["device", "add", "ann", "b"])?;
    let token_c = admin(dir.path(), &["device", "add", "ann", "c"])?;
    let hub = start_hub(dir.path())?;
    println!("hub: {} (SQLite replica in a temporary directory)", hub.url);
    let devices_dir = match std::env::var("MESH_BENCH_DIR") {
        Ok(base) => tempfile::tempdir_in(base)?,
        Err(_) => tempfile::tempdir()?,
    };
    let ddir = devices_dir.path();

    // ---- initial sync A → hub → B ----------------------------------------------------------
    let net = SimNetwork::new(SimConfig::default());
    let (link, a_link) = net.wrap(HttpTransport::new(&hub.url, &token_a)?);
    a_link.set_online(false);
    let a = device("ann", "a", link, ddir).await?;
    let folder = a
        .create_folder("Bench", "app/bench".parse().unwrap())
        .await?;
    let feed = a.create_feed(&folder.id, "items".parse()?, "Items").await?;
    let t = Instant::now();
    let ids: Vec<usize> = (0..entries).collect();
    for chunk in ids.chunks(1000) {
        let drafts: Vec<EntryDraft> = chunk
            .iter()
            .map(|&i| EntryDraft::new(format!("item {i}"), kib_payload(i)))
            .collect();
        a.put_many(&folder.id, &feed, drafts).await?;
    }
    println!(
        "local writes on A: {entries} entries in {:.2?}, 1,000 per transaction (not part of the sync figures)",
        t.elapsed()
    );
    a_link.set_online(true);
    let cpu = (cpu_time_of("self"), hub.cpu_time());
    let t = Instant::now();
    a.sync_now().await?;
    let push_time = t.elapsed();
    let push_cpu = (cpu_time_of("self") - cpu.0, hub.cpu_time() - cpu.1);
    let sent = entries;
    // B starts cut off too, so that its first session is the timed one.
    let (link, control) = net.wrap(HttpTransport::new(&hub.url, &token_b)?);
    control.set_online(false);
    let b = device("ann", "b", link, ddir).await?;
    control.set_online(true);
    let cpu = (cpu_time_of("self"), hub.cpu_time());
    let t = Instant::now();
    b.sync_now().await?;
    let pull_time = t.elapsed();
    let pull_cpu = (cpu_time_of("self") - cpu.0, hub.cpu_time() - cpu.1);
    let received = b
        .query(&folder.id, &feed, mesh_core::model::Query::new())
        .await?
        .len();
    let total = push_time + pull_time;
    println!(
        "initial sync: A→hub {sent} entries in {push_time:.2?} ({:.0}/s); hub→B {received} in {pull_time:.2?} ({:.0}/s); A→hub→B {:.0} entries/s",
        sent as f64 / push_time.as_secs_f64(),
        received as f64 / pull_time.as_secs_f64(),
        entries as f64 / total.as_secs_f64()
    );
    // Where the CPU goes (user + system time of the devices' process and of the hub's), per
    // entry: on two cores a phase cannot take less than half its CPU time.
    let per = |d: Duration| d.as_secs_f64() * 1e6 / entries.max(1) as f64;
    println!(
        "CPU per entry: A→hub: device A {:.1} µs, hub {:.1} µs (wall {:.1} µs); hub→B: device B {:.1} µs, hub {:.1} µs (wall {:.1} µs)",
        per(push_cpu.0),
        per(push_cpu.1),
        per(push_time),
        per(pull_cpu.0),
        per(pull_cpu.1),
        per(pull_time),
    );
    println!(
        "hub RSS after the initial sync: {} MiB",
        hub.rss_kib() / 1024
    );
    // The same rows (the entries as B holds them, as JSON), inserted with plain rusqlite.
    let rows: Vec<(String, String)> = b
        .query(&folder.id, &feed, mesh_core::model::Query::new())
        .await?
        .iter()
        .map(|e| Ok((e.sync.id.to_string(), serde_json::to_string(e)?)))
        .collect::<Result<_, Error>>()?;
    // The reference is taken three times, each after the disk has written back what came
    // before (the sync's own data, then the previous insert's): one insert right after the
    // sync moved by more than the sync itself does from run to run. The median is kept.
    let mut raws = Vec::new();
    for i in 0..3 {
        let _ = Command::new("sync").status();
        raws.push(raw_insert_rate(&ddir.join(format!("raw-{i}.db")), &rows)?);
    }
    raws.sort_by(f64::total_cmp);
    let raw = raws[1];
    let rate = entries as f64 / total.as_secs_f64();
    println!(
        "plain rusqlite insert of the same {} rows, same disk: {raw:.0} rows/s (median of {:.0}, {:.0}, {:.0}); the initial sync runs at {:.1}% of it",
        rows.len(),
        raws[0],
        raws[1],
        raws[2],
        100.0 * rate / raw
    );

    // ---- the same through a relay: B online while A pushes ---------------------------------
    // A writes as many entries again, in a second folder, while cut off; B stays online and
    // hears of each page the hub merges, so it pulls while A is still pushing. Timed from A
    // going online to B's next sync ending after A's push did.
    a_link.set_online(false);
    let folder2 = a
        .create_folder("Bench 2", "app/bench".parse().unwrap())
        .await?;
    let feed2 = a
        .create_feed(&folder2.id, "items".parse()?, "Items")
        .await?;
    for chunk in ids.chunks(1000) {
        let drafts: Vec<EntryDraft> = chunk
            .iter()
            .map(|&i| EntryDraft::new(format!("item {i}"), kib_payload(i + entries)))
            .collect();
        a.put_many(&folder2.id, &feed2, drafts).await?;
    }
    a_link.set_online(true);
    let t = Instant::now();
    a.sync_now().await?;
    let pushed = t.elapsed();
    let last: usize = b.sync_now().await?.iter().map(|(_, r)| r.received).sum();
    let relayed = t.elapsed();
    let got = b
        .query(&folder2.id, &feed2, mesh_core::model::Query::new())
        .await?
        .len();
    if got != entries {
        return Err(format!("B holds {got} of the {entries} relayed entries").into());
    }
    let rate2 = entries as f64 / relayed.as_secs_f64();
    println!(
        "initial sync through a relay (B online while A pushes): A→hub done in {pushed:.2?}, B done in {relayed:.2?} ({} of {entries} pulled after A's push ended): A→hub→B {rate2:.0} entries/s, {:.1}% of the raw insert rate",
        last,
        100.0 * rate2 / raw
    );
    // MESH_BENCH_ONLY=initial stops here (the verification on/off comparison).
    if std::env::var("MESH_BENCH_ONLY").as_deref() == Ok("initial") {
        return Ok(());
    }

    // ---- write on A → change event on B ----------------------------------------------------
    if std::env::var("MESH_BENCH_ONLY").as_deref() != Ok("incremental") {
        b.sync_now().await?;
        a.sync_now().await?;
        let mut b_events = b.subscribe(&folder.id, Some(&feed));
        let mut lat = Vec::with_capacity(writes);
        for i in 0..writes {
            let t = Instant::now();
            let e = a
                .put(
                    &folder.id,
                    &feed,
                    EntryDraft::new(format!("live {i}"), json!({"i": i})),
                )
                .await?;
            tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(ev) = b_events.next().await {
                    if let Event::EntryChanged {
                        id,
                        source: ChangeSource::Remote(_),
                        ..
                    } = ev
                    {
                        if id == e.sync.id {
                            return;
                        }
                    }
                }
            })
            .await
            .map_err(|_| "no change event on B")?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "write on A → change event on B over {writes} writes: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default()
        );
    }
    // Only the writer and one receiver are online while one entry's sync is timed, as in
    // issue 16's "A → hub → B": the initial sync's devices would otherwise pull every change
    // too, on the same two cores.
    a.close();
    b.close();

    // ---- incremental sync of one entry -----------------------------------------------------
    // C writes (behind a byte-counting proxy, without notifications: only its session counts);
    // D receives (behind another proxy, with its notification stream: the announcement and
    // its session count).
    // MESH_BENCH_DIRECT=1: both devices reach the hub straight, to time the sync without the
    // proxies' own hops (bytes are then not counted).
    let direct = std::env::var("MESH_BENCH_DIRECT").as_deref() == Ok("1");
    let through = |url: String| async move {
        if direct {
            Ok::<_, Error>((url, Counters::default()))
        } else {
            proxy(&url).await
        }
    };
    let (url_c, counters) = through(hub.url.clone()).await?;
    let c = device(
        "ann",
        "c",
        NoWatch(HttpTransport::new(&url_c, &token_c)?),
        ddir,
    )
    .await?;
    c.sync_now().await?; // catch up first (pulls everything)
    let token_d = admin(dir.path(), &["device", "add", "ann", "d"])?;
    let (url_d, counters_d) = through(hub.url.clone()).await?;
    let d = device("ann", "d", HttpTransport::new(&url_d, &token_d)?, ddir).await?;
    d.sync_now().await?;
    let mut c_events = c.events();
    let mut d_events = d.events();
    type Payload = fn(usize) -> serde_json::Value;
    let contents: [(&str, Payload); 2] = [
        ("repeated digits", kib_payload),
        ("random base64", random_payload),
    ];
    let warmup = env_usize("MESH_BENCH_WARMUP", 0);
    for i in 0..warmup {
        let e = c
            .put(
                &folder.id,
                &feed,
                EntryDraft::new(format!("warm-up {i}"), random_payload(i)),
            )
            .await?;
        session_done(&mut c_events).await?;
        change_received(&mut d_events, e.sync.id.as_str()).await?;
    }
    if warmup > 0 {
        println!("incremental sync: {warmup} one-entry writes synced first, untimed");
    }
    for (what, payload) in contents {
        let mut times = Vec::new();
        let mut local = Vec::new();
        let mut end_to_end = Vec::new();
        let mut bytes = Vec::new();
        let mut bytes_d = Vec::new();
        for i in 0..env_usize("MESH_BENCH_ROUNDS", 20) {
            let before = counters.total();
            let before_d = counters_d.total();
            let t = Instant::now();
            let e = c
                .put(
                    &folder.id,
                    &feed,
                    EntryDraft::new(format!("inc {i}"), payload(i)),
                )
                .await?;
            local.push(t.elapsed());
            // Both awaited together: D's change event often comes before C's session ends,
            // and is timed when it comes, not after C's.
            let (c_done, seen) = tokio::join!(
                async {
                    session_done(&mut c_events).await?;
                    Ok::<_, Error>(t.elapsed())
                },
                change_received(&mut d_events, e.sync.id.as_str())
            );
            times.push(c_done?);
            let seen = seen?;
            bytes.push(counters.total() - before);
            end_to_end.push(seen - t);
            bytes_d.push(counters_d.total() - before_d);
        }
        times.sort();
        local.sort();
        end_to_end.sort();
        bytes.sort();
        bytes_d.sort();
        let wire = if direct {
            "bytes not counted (no proxies: MESH_BENCH_DIRECT=1)".to_owned()
        } else {
            format!(
                "{} bytes on the wire; hub → device D {} bytes (medians; requests, responses and notifications with HTTP headers)",
                bytes[bytes.len() / 2],
                bytes_d[bytes_d.len() / 2],
            )
        };
        println!(
            "incremental sync of one 1 KiB entry ({what}): device C → hub median {:.2?} (of which C's durable local write {:.2?}), max {:.2?}, {wire}; C's write → D's change event median {:.2?}",
            percentile(&times, 0.5),
            percentile(&local, 0.5),
            times.last().copied().unwrap_or_default(),
            percentile(&end_to_end, 0.5),
        );
    }
    d.close();
    c.close();
    // MESH_BENCH_ONLY=incremental stops here.
    if std::env::var("MESH_BENCH_ONLY").as_deref() == Ok("incremental") {
        return Ok(());
    }
    drop(hub);

    // ---- memory of a hub holding many notification streams ---------------------------------
    let dir = tempfile::tempdir()?;
    admin(dir.path(), &["user", "add", "ann"])?;
    let token = admin(dir.path(), &["device", "add", "ann", "base"])?;
    let hub = start_hub(dir.path())?;
    let http = reqwest::Client::new();
    // One device (and token) per stream, enrolled through the API: the base device mints a
    // one-time code, the new device registers with it.
    let mut tokens = Vec::with_capacity(streams);
    for i in 0..streams {
        let c: serde_json::Value = http
            .post(format!("{}/mesh/devices/codes", hub.url))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let v: serde_json::Value = http
            .post(format!("{}/mesh/devices", hub.url))
            .json(&json!({"id": format!("d{i}"), "code": c["code"]}))
            .send()
            .await?
            .json()
            .await?;
        tokens.push(v["token"].as_str().ok_or("no token")?.to_owned());
    }
    // Warm the hub up with one stream, then measure the baseline.
    let warm = HttpTransport::new(&hub.url, &token)?;
    let _warm = warm.watch().await?;
    let idle = hub.rss_kib();
    let mut open = Vec::with_capacity(streams);
    for t in &tokens {
        let tr = HttpTransport::new(&hub.url, t)?;
        open.push(tr.watch().await?);
    }
    let loaded = hub.rss_kib();
    println!(
        "hub RSS: {:.1} MiB idle, {:.1} MiB with {streams} open SSE streams ({:.1} KiB per stream)",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        loaded.saturating_sub(idle) as f64 / streams.max(1) as f64
    );
    drop(open);
    Ok(())
}

fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this too, so only run
    // the (long) measurements when asked for.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hub benchmarks: run with `cargo bench -p mesh-hub --bench hub`");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
