//! Benchmarks of N hub processes on one PostgreSQL database (the figures of issue 14):
//!
//! * push throughput of many devices against 1, 2 and 4 hub processes (entries/s), each
//!   device in a folder of its own, devices spread round-robin over the processes;
//! * write → change-notification latency when the writer's process and the listener's
//!   differ (p50, p99), beside the same with both on one process;
//! * many devices with open notification streams spread over the processes, with periodic
//!   small writes: hub memory per device, and PostgreSQL rows and bytes per entry.
//!
//! Needs a server: `eval "$(bash .ci/postgres.sh start)"`, then
//!
//! ```text
//! cargo bench -p mesh-hub --bench scale_out
//! MESH_BENCH_DEVICES=16 MESH_BENCH_PER_DEVICE=2000 MESH_BENCH_STREAMS=10000 cargo bench -p mesh-hub --bench scale_out
//! ```

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_client::transport::{HttpTransport, Transport};
use mesh_core::model::{Entry, EntryDraft, FeedKey};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::MemoryStore;
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_core::trust::SecretKey;
use mesh_hub::Hub;
use mesh_store::postgres::PgConfig;
use serde_json::json;

mod common;

use common::{Error, HubProcess, NO_LIMITS};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_unix(secs).unwrap_or(Timestamp::EPOCH)
}

/// One schema on the server, its accounts (a hub handle, not served) and its processes.
struct Cluster {
    url: String,
    schema: String,
    admin: Hub,
}

impl Cluster {
    fn new(url: &str, tag: &str) -> Result<Cluster, Error> {
        let schema = format!("bench_{tag}_{}", std::process::id());
        let admin = Hub::builder()
            .postgres(PgConfig::new(url).schema(schema.clone()))
            .migrate(true)
            .build()?;
        Ok(Cluster {
            url: url.to_owned(),
            schema,
            admin,
        })
    }

    fn processes(&self, n: usize) -> Result<Vec<HubProcess>, Error> {
        (0..n).map(|_| self.process()).collect()
    }

    fn process(&self) -> Result<HubProcess, Error> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mesh-hub"));
        command
            .args(["--database", &self.url, "--db-schema", &self.schema])
            .args(["--db-connections", "24", "--listen", "127.0.0.1:0"])
            .args(["--log", "warn"])
            .args(NO_LIMITS)
            .stderr(Stdio::null());
        HubProcess::spawn(command)
    }

    fn token(&self, user: &str, device: &str) -> Result<String, Error> {
        let u = user.parse()?;
        let a = self.admin.accounts();
        match a.add_user(&u) {
            Ok(()) | Err(mesh_hub::HubError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(a.add_device(&u, &device.parse()?, device, "bench")?)
    }

    /// PostgreSQL's own measure of the replica's tables: (entries, bytes of the entries table
    /// with its indexes and TOAST).
    async fn entry_footprint(&self) -> Result<(i64, i64), Error> {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let row = c
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {schema}.mesh_entries),
                            pg_total_relation_size('{schema}.mesh_entries')"
                ),
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// A device pushing pre-signed pages through the sync endpoint.
struct Device {
    http: HttpTransport,
    from: mesh_core::id::ReplicaId,
    feed: FeedKey,
    pages: Vec<Vec<Entry>>,
}

async fn device(
    cluster: &Cluster,
    hub: &HubProcess,
    n: usize,
    entries: usize,
    page: usize,
) -> Result<Device, Error> {
    let (user, dev, folder) = (format!("u{n}"), format!("u{n}-dev"), format!("f{n}@u{n}"));
    let token = cluster.token(&user, &dev)?;
    let http = HttpTransport::new(&hub.url, &token)?;
    let key = SecretKey::from_seed([n as u8 ^ 0x5a; 32]);
    http.enroll(&dev.parse()?, &key.public()).await?;
    let rest = reqwest::Client::new();
    for (path, body) in [
        (
            "/mesh/folders".to_owned(),
            json!({"name": folder, "kind": "app/bench", "id": folder}),
        ),
        (
            format!("/mesh/folders/{folder}/feeds"),
            json!({"name": "items"}),
        ),
    ] {
        let s = rest
            .post(format!("{}{path}", hub.url))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?
            .status();
        if s.as_u16() != 201 {
            return Err(format!("creating {path}: {s}").into());
        }
    }
    let feed: FeedKey = format!("folder:{folder}/items").parse()?;
    let mut replica = Replica::new(MemoryStore::new(dev.parse()?));
    replica.set_signer(key);
    let actor = Actor::new(user.parse()?, dev.parse()?);
    let body = "x".repeat(1024 - 64);
    let mut all = Vec::with_capacity(entries);
    let when = now();
    for i in 0..entries {
        let w = replica.create(
            &feed,
            format!("e{i:07}").parse()?,
            EntryDraft::new(format!("entry {i}"), json!({ "body": body })),
            &actor,
            when,
        )?;
        all.push(w.entry);
    }
    let pages = all.chunks(page).map(<[Entry]>::to_vec).collect();
    Ok(Device {
        http,
        from: dev.parse()?,
        feed,
        pages,
    })
}

async fn push_all(d: Device) -> Result<usize, Error> {
    let mut n = 0;
    for page in d.pages {
        let len = page.len();
        let r = d
            .http
            .send(Request::Push {
                from: d.from.clone(),
                feed: d.feed.clone(),
                entries: page,
            })
            .await?;
        let Response::Pushed { results, .. } = r else {
            return Err("unexpected answer".into());
        };
        if let Some(code) = results.iter().find_map(|x| x.code.clone()) {
            return Err(format!("refused: {code}").into());
        }
        n += len;
    }
    Ok(n)
}

/// Push throughput of `devices` devices against `processes` hub processes.
async fn throughput(url: &str, processes: usize, devices: usize, per: usize) -> Result<f64, Error> {
    let cluster = Cluster::new(url, &format!("t{processes}"))?;
    let hubs = cluster.processes(processes)?;
    let mut ds = Vec::new();
    for n in 0..devices {
        ds.push(device(&cluster, &hubs[n % processes], n, per, 250).await?);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = ds.into_iter().map(|d| tokio::spawn(push_all(d))).collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    if processes == 1 {
        let (rows, bytes) = cluster.entry_footprint().await?;
        println!(
            "PostgreSQL: {rows} entries of 1 KiB, mesh_entries {:.1} MiB with indexes: {:.0} bytes per entry (one row each)",
            bytes as f64 / 1048576.0,
            bytes as f64 / rows.max(1) as f64
        );
    }
    drop(hubs);
    Ok(rate)
}

/// Write → notification latency: the writer pushes through `hubs[0]`, the listener's stream
/// is held by `hubs[listener]`.
async fn latency(
    cluster: &Cluster,
    hubs: &[HubProcess],
    listener: usize,
    samples: usize,
) -> Result<(Duration, Duration), Error> {
    let tag = format!("lat{listener}");
    let mut writer = device(cluster, &hubs[0], 900 + listener, samples, 1).await?;
    let token = cluster.token(&format!("u{}", 900 + listener), &format!("{tag}-listener"))?;
    let watcher = HttpTransport::new(&hubs[listener].url, &token)?;
    let mut stream = watcher.watch().await?;
    let mut lat = Vec::with_capacity(samples);
    let pages = std::mem::take(&mut writer.pages);
    for page in pages {
        let t0 = Instant::now();
        writer
            .http
            .send(Request::Push {
                from: writer.from.clone(),
                feed: writer.feed.clone(),
                entries: page,
            })
            .await?;
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .map_err(|_| "no notification within 10 s")?
                .ok_or("stream ended")?;
            if n.feed == writer.feed {
                break;
            }
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
}

/// Many devices with open streams over `processes` processes, with periodic small writes.
async fn streams(url: &str, processes: usize, count: usize) -> Result<(), Error> {
    let cluster = Arc::new(Cluster::new(url, "s")?);
    let hubs = cluster.processes(processes)?;
    // Users of ten devices each; tokens made on a few threads (each is a transaction).
    let t0 = Instant::now();
    let mut makers = Vec::new();
    for part in 0..4 {
        let c = cluster.clone();
        makers.push(std::thread::spawn(move || {
            (part..count)
                .step_by(4)
                .map(|i| {
                    c.token(&format!("s{}", i / 10), &format!("s{i}"))
                        .map(|t| (i, t))
                })
                .collect::<Result<Vec<_>, Error>>()
        }));
    }
    let mut tokens = Vec::with_capacity(count);
    for m in makers {
        tokens.extend(m.join().map_err(|_| "token thread")??);
    }
    tokens.sort();
    println!(
        "  {count} devices registered in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let idle: u64 = hubs.iter().map(HubProcess::rss_kib).sum();
    let mut open = Vec::with_capacity(count);
    for (i, t) in &tokens {
        let tr = HttpTransport::new(&hubs[i % processes].url, t)?;
        open.push(tr.watch().await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded: u64 = hubs.iter().map(HubProcess::rss_kib).sum();
    println!(
        "  {count} open streams over {processes} processes: hub RSS {:.1} → {:.1} MiB in all, {:.1} KiB per device",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        loaded.saturating_sub(idle) as f64 / count.max(1) as f64
    );
    // Periodic small writes while the streams are open: 20 writers, one entry each every
    // 100 ms for 3 s, timed from push to answer.
    let mut writers = Vec::new();
    for w in 0..20 {
        writers.push(device(&cluster, &hubs[w % processes], 2000 + w, 30, 1).await?);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|d| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for page in d.pages {
                    tick.tick().await;
                    let t = Instant::now();
                    d.http
                        .send(Request::Push {
                            from: d.from.clone(),
                            feed: d.feed.clone(),
                            entries: page,
                        })
                        .await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, Error>(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort();
    println!(
        "  {} small writes in {:.1} s with the streams open: p50 {:?}, p99 {:?}",
        lat.len(),
        t0.elapsed().as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    drop(open);
    Ok(())
}

fn main() -> Result<(), Error> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale-out benchmarks: run with `cargo bench -p mesh-hub --bench scale_out`");
        return Ok(());
    }
    let Ok(url) = std::env::var("MESH_TEST_POSTGRES") else {
        println!("scale-out benchmarks: no PostgreSQL (eval \"$(bash .ci/postgres.sh start)\")");
        return Ok(());
    };
    let devices = env_usize("MESH_BENCH_DEVICES", 16);
    let per = env_usize("MESH_BENCH_PER_DEVICE", 1_000);
    let samples = env_usize("MESH_BENCH_SAMPLES", 200);
    let stream_count = env_usize("MESH_BENCH_STREAMS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("push throughput, {devices} devices × {per} entries of 1 KiB, pages of 250:");
        let mut base = 0.0;
        for p in [1, 2, 4] {
            let rate = throughput(&url, p, devices, per).await?;
            if p == 1 {
                base = rate;
            }
            println!(
                "  {p} hub process(es): {rate:.0} entries/s ({:.2}× one)",
                rate / base
            );
        }
        let cluster = Cluster::new(&url, "l")?;
        let hubs = cluster.processes(2)?;
        let (p50, p99) = latency(&cluster, &hubs, 0, samples).await?;
        println!("write → notification, same process: p50 {p50:?}, p99 {p99:?}");
        let (p50, p99) = latency(&cluster, &hubs, 1, samples).await?;
        println!("write → notification, across processes: p50 {p50:?}, p99 {p99:?}");
        drop(hubs);
        println!("{stream_count} devices with open notification streams:");
        streams(&url, 2, stream_count).await?;
        Ok::<_, Error>(())
    })
}
