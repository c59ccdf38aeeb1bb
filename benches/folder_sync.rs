//! Folders of files: mesh against rsync, side by side, in one run on the same data.
//!
//! Run it through `benches/folder_sync.sh` (installs rsync, builds this in release, prints the
//! machine), or directly:
//!
//! ```text
//! cargo bench --bench folder_sync -- [--quick] [--files N] [--file-kib K] [--big-mib M]
//!     [--change-kib K] [--dir DIR] [--keep] [--rounds N] [--timeout-s S] [--in-process]
//!     [--peer] [--compare [--repeat N]] [--durability full|normal] [--link-mbps R] [--settle]
//! ```
//!
//! `--settle` waits, before anything else, until [`SETTLE`] has passed since the last run in the
//! same directory deleted its data (see `docs/benchmarks.md`, twenty-ninth session, "What the
//! disk stalls were"); without it, a run that starts sooner says so.
//!
//! `--link-mbps R` makes every counting proxy a link of R megabytes (10^6 bytes) per second in
//! each direction, shared by its connections: A's and B's links to the hub (or B's to A with
//! `--peer`), and rsync's one link, as when the devices are different machines on a network.
//!
//! `--compare` runs cases (a) to (c) with the hub over HTTP and with the peer transport in
//! one process on the same data, alternating, `--repeat` times each (3 by default, fresh
//! replicas every time, rsync after every case), and prints the medians side by side.
//!
//! Cases, each run first with mesh and then with rsync on the same source directory:
//!
//! * **small** — N files of K KiB of random bytes (10,000 × 4 KiB; `--quick`: 1,000),
//!   in 100 subdirectories;
//! * **big** — one file of M MiB of random bytes (256 MiB; `--quick`: 32 MiB);
//! * **edit** — 1 MiB in the middle of the big file overwritten with new random bytes, then
//!   synced again onto the previous copy;
//! * **delete** (mesh only) — every file of *small* deleted on A (off the clock, A's directory
//!   mapped again without a watcher), until B's copy holds none; the time A's pass takes to
//!   publish the deletions is set against the time it took to publish the creations in
//!   *small*.
//!
//! mesh: a hub (`mesh_hub::Hub`, SQLite data in the run's directory) serves HTTP on
//! 127.0.0.1; devices A and B of one user are `MeshClient`s with SQLite stores and
//! `HttpTransport`s, each through its own byte-counting TCP proxy in front of the hub
//! (`--in-process`: an `InProcessHub` on SQLite instead, no HTTP, no bytes counted; every
//! database at `synchronous = FULL`, the default, or `--durability normal`; `--peer`: A and
//! B enroll with an in-process hub, then A listens for peers and B syncs with A alone over
//! the peer transport, TLS 1.3 through a counting proxy, one hop). B maps an
//! empty directory to the case's folder first (not timed). The clock starts when A starts
//! publishing (`map_folder` on the source directory; for *edit*, just before the file is
//! modified, since A's watcher may react at once) and stops at the end of the sync round after
//! which B's directory is found equal to the source (same relative paths, sizes and BLAKE3
//! hashes; the final comparison itself is not timed). A round is `A.sync_now`,
//! `B.sync_now`, `B.rescan`.
//!
//! rsync: `rsync --daemon` on 127.0.0.1 with one read-only module per case over the same
//! source directory, reached through a counting proxy of the same kind; the clock covers one
//! `rsync -a --stats rsync://…/module/ dst/` process.
//!
//! Bytes are everything on the wire through the proxies (HTTP headers included; no TLS), both
//! directions; rsync's own `Total bytes sent/received` are printed too. For mesh the driver
//! also prints where the time went (the publishing step and each call of the first round) and
//! what the process wrote to disk (`/proc/self/io`), and for the edit the least any
//! chunk-based sync has to move (the new chunks and the new manifest).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh::client::peer::{PeerListener, PeerTransport};
use mesh::client::store::{Durability, StoreConfig};
use mesh::client::sync::MappingEvent;
use mesh::client::transport::{HttpTransport, InProcessHub};
use mesh::client::{Event, MeshClient};
use mesh::core::blob::{chunk_boundaries, ChunkHash, Manifest};
use mesh::core::id::{FolderId, RemoteId};
use mesh::hub::Hub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const MIB: u64 = 1 << 20;

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    files: usize,
    file_kib: usize,
    big_mib: usize,
    change_kib: usize,
    dir: Option<PathBuf>,
    keep: bool,
    max_rounds: usize,
    timeout: Duration,
    in_process: bool,
    peer: bool,
    /// `--compare`: the hub over HTTP and the peer transport in one run, `repeat` times each.
    compare: bool,
    repeat: usize,
    durability: Durability,
    /// `--link-mbps`: each proxy's bandwidth per direction, bytes per second.
    link: Option<u64>,
    /// `--settle`: wait until [`SETTLE`] has passed since the last run's clean-up.
    settle: bool,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut o = Options {
            files: 10_000,
            file_kib: 4,
            big_mib: 256,
            change_kib: 1024,
            dir: std::env::var_os("MESH_BENCH_DIR").map(PathBuf::from),
            keep: false,
            max_rounds: 500,
            timeout: Duration::from_secs(900),
            in_process: false,
            peer: false,
            compare: false,
            repeat: 3,
            durability: Durability::Full,
            link: None,
            settle: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| -> Result<String> {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value").into())
            };
            match a.as_str() {
                "--quick" => {
                    o.files = 1_000;
                    o.big_mib = 32;
                }
                "--files" => o.files = value("--files")?.parse()?,
                "--file-kib" => o.file_kib = value("--file-kib")?.parse()?,
                "--big-mib" => o.big_mib = value("--big-mib")?.parse()?,
                "--change-kib" => o.change_kib = value("--change-kib")?.parse()?,
                "--dir" => o.dir = Some(value("--dir")?.into()),
                "--rounds" => o.max_rounds = value("--rounds")?.parse()?,
                "--timeout-s" => o.timeout = Duration::from_secs(value("--timeout-s")?.parse()?),
                "--keep" => o.keep = true,
                "--in-process" => o.in_process = true,
                "--peer" => o.peer = true,
                "--compare" => o.compare = true,
                "--repeat" => o.repeat = value("--repeat")?.parse()?,
                "--durability" => {
                    o.durability = match value("--durability")?.as_str() {
                        "full" => Durability::Full,
                        "normal" => Durability::Normal,
                        other => {
                            return Err(format!("--durability {other:?}: full or normal").into())
                        }
                    }
                }
                "--settle" => o.settle = true,
                "--link-mbps" => {
                    let mbps: f64 = value("--link-mbps")?.parse()?;
                    if !(mbps > 0.0 && mbps.is_finite()) {
                        return Err("--link-mbps must be a positive number".into());
                    }
                    o.link = Some((mbps * 1e6) as u64);
                }
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "folder_sync [--quick] [--files N] [--file-kib K] [--big-mib M] \
                         [--change-kib K] [--dir DIR] [--rounds N] [--timeout-s S] [--keep] \
                         [--in-process] [--peer] [--compare [--repeat N]] \
                         [--durability full|normal] [--link-mbps R] [--settle]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        if o.compare && o.repeat == 0 {
            return Err("--repeat must be at least 1".into());
        }
        if o.change_kib * 1024 > o.big_mib * 1024 * 1024 {
            return Err("--change-kib is larger than the big file".into());
        }
        Ok(o)
    }

    /// Where runs in this run's parent directory note when they last deleted their data.
    fn cleanup_stamp(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(".mesh-folder-bench-cleaned")
    }
}

// ---- runs back to back -----------------------------------------------------------------------

/// How long a run's deleted files keep slowing the creation of new ones.
///
/// ext4 without a journal (this project's benchmark machine) passes over every free inode
/// that was freed within the last 60 s, or 360 s while its inode table block is still
/// dirty, when it looks for one to give a new file (the kernel's `recently_deleted`). A run
/// deletes some 30,000 files: A's and B's 10,000 small files in case (d), even with
/// `--keep`, and rsync's copy with the rest of its directory at its end. The next run's file
/// creations (the data, B's copies, rsync's) scan past them: on that machine 10,000 new files
/// took 0.9–2.4 s instead of 0.3 s in a directory created seconds after such a deletion.
const SETTLE: Duration = Duration::from_secs(360);

/// Says, and with `--settle` waits, when the last run in the same place deleted its data
/// less than [`SETTLE`] ago.
fn settle(o: &Options) {
    let Ok(age) = std::fs::metadata(o.cleanup_stamp())
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default())
    else {
        return;
    };
    if age >= SETTLE {
        return;
    }
    let left = SETTLE - age;
    if o.settle {
        println!(
            "settling: the last run deleted its data {:.0} s ago; waiting {:.0} s",
            age.as_secs_f64(),
            left.as_secs_f64()
        );
        std::thread::sleep(left);
    } else {
        println!(
            "note: the last run deleted its data {:.0} s ago. File creation may be slower \
             for another {:.0} s on file systems that pass over recently freed inodes (ext4 \
             without a journal); --settle waits",
            age.as_secs_f64(),
            left.as_secs_f64()
        );
    }
}

/// Notes that a run has just deleted its data (see [`settle`]).
fn stamp_cleanup(o: &Options) {
    let _ = std::fs::write(o.cleanup_stamp(), b"");
}

// ---- the counting proxy ----------------------------------------------------------------------

/// Each proxy's bandwidth per direction (bytes per second), when `--link-mbps` is given.
static LINK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Bytes through one proxy: `up` from the client to the server, `down` back; and when each
/// direction's link is next free (`--link-mbps`).
#[derive(Debug, Default)]
struct Counter {
    up: AtomicU64,
    down: AtomicU64,
    up_free: std::sync::Mutex<Option<tokio::time::Instant>>,
    down_free: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Waits until `n` bytes have crossed a link of `LINK` bytes per second whose earlier bytes
/// keep it busy until `free` (nothing without `--link-mbps`). Waits shorter than the timer's
/// resolution are added up rather than slept one by one, and a link idle for less than
/// 50 ms makes up for the time its last wait overslept, so the rate holds on average.
async fn cross(free: &std::sync::Mutex<Option<tokio::time::Instant>>, n: usize) {
    let Some(rate) = LINK.get() else { return };
    let now = tokio::time::Instant::now();
    let done = {
        let mut free = free.lock().unwrap();
        let start = match *free {
            Some(f) if f + Duration::from_millis(50) > now => f,
            _ => now,
        };
        let done = start + Duration::from_secs_f64(n as f64 / *rate as f64);
        *free = Some(done);
        done
    };
    if done > now + Duration::from_millis(2) {
        tokio::time::sleep_until(done).await;
    }
}

impl Counter {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// A TCP proxy on 127.0.0.1 in front of `target` that counts the bytes it forwards, both ways,
/// as they pass (connections are kept alive across requests, so counting at close would be too
/// late).
async fn counting_proxy(target: SocketAddr) -> Result<(SocketAddr, Arc<Counter>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::join!(
                    pipe(ir, ow, &c.up, &c.up_free),
                    pipe(or, iw, &c.down, &c.down_free)
                );
            });
        }
    });
    Ok((addr, counter))
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: &AtomicU64,
    free: &std::sync::Mutex<Option<tokio::time::Instant>>,
) {
    // (Small reads on a paced link, so that pacing is smooth.)
    let mut buf = vec![0u8; if LINK.get().is_some() { 64 } else { 256 } * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                cross(free, n).await;
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

// ---- data and comparison ---------------------------------------------------------------------

/// Writes `len` random bytes to `path`.
fn random_file(rng: &mut fastrand::Rng, path: &Path, len: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; len.min(8 << 20)];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n;
    }
    f.flush()?;
    Ok(())
}

/// Overwrites part of `path` with `bytes` at `offset` (same size), as an editor saving in
/// place would.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(bytes, offset)?;
    f.sync_all()?;
    Ok(())
}

/// The tree of `root` as it will be once `bytes` are written at `offset` of the file `rel`,
/// and what that edit means in content-defined chunks.
fn patched_tree(root: &Path, rel: &str, offset: u64, bytes: &[u8]) -> Result<(Tree, ChunkDelta)> {
    let mut t = tree(root)?;
    let mut content = Vec::new();
    std::fs::File::open(root.join(rel))?.read_to_end(&mut content)?;
    let old: HashSet<ChunkHash> = chunk_boundaries(&content)
        .map(|r| ChunkHash::of(&content[r]))
        .collect();
    let at = offset as usize;
    content[at..at + bytes.len()].copy_from_slice(bytes);
    t.insert(
        rel.to_owned(),
        (content.len() as u64, blake3::hash(&content)),
    );
    let chunks: Vec<(ChunkHash, u32)> = chunk_boundaries(&content)
        .map(|r| (ChunkHash::of(&content[r.clone()]), r.len() as u32))
        .collect();
    let new: Vec<_> = chunks.iter().filter(|(h, _)| !old.contains(h)).collect();
    let delta = ChunkDelta {
        chunks: chunks.len(),
        new_chunks: new.len(),
        new_bytes: new.iter().map(|(_, n)| u64::from(*n)).sum(),
        manifest_bytes: Manifest::new(chunks.iter().copied())?.encode().len() as u64,
    };
    Ok((t, delta))
}

/// An edit of a file in content-defined chunks: what any chunk-based sync has to move.
#[derive(Debug)]
struct ChunkDelta {
    /// Chunks of the new version.
    chunks: usize,
    /// Of which not in the old version, and their bytes.
    new_chunks: usize,
    new_bytes: u64,
    /// The new version's encoded manifest.
    manifest_bytes: u64,
}

/// Files of a tree: relative path → size. Directories are implied by their files; nothing
/// else (symlinks, sockets) is expected in these trees.
fn sizes(root: &Path) -> Result<BTreeMap<String, u64>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let t = e.file_type()?;
            let path = e.path();
            if t.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                // A mapping's marker is not part of the data.
                if rel != mesh::client::mapping::MARKER_FILE {
                    out.insert(rel, e.metadata()?.len());
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out)?;
    }
    Ok(out)
}

/// Files of a tree: relative path → (size, BLAKE3 of the content).
type Tree = BTreeMap<String, (u64, blake3::Hash)>;

fn tree(root: &Path) -> Result<Tree> {
    let mut out = Tree::new();
    let mut buf = vec![0u8; 1 << 20];
    for (rel, size) in sizes(root)? {
        let mut f = std::fs::File::open(root.join(&rel))?;
        let mut h = blake3::Hasher::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        out.insert(rel, (size, h.finalize()));
    }
    Ok(out)
}

/// Whether `dst` holds exactly `want`: sizes first (cheap), then contents.
fn equal(want: &Tree, dst: &Path) -> Result<bool> {
    let got = sizes(dst)?;
    if got.len() != want.len()
        || got
            .iter()
            .any(|(p, s)| want.get(p).map(|w| w.0) != Some(*s))
    {
        return Ok(false);
    }
    Ok(&tree(dst)? == want)
}

/// Bytes this process has caused to be written to storage (0 where `/proc` cannot tell).
fn disk_writes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Flushes dirty pages to disk so that one side's write-back does not land in the other's
/// timing.
fn flush_disks() {
    let _ = Command::new("sync").status();
}

// ---- mesh ------------------------------------------------------------------------------------

struct MeshSide {
    a: MeshClient,
    b: MeshClient,
    count_a: Arc<Counter>,
    count_b: Arc<Counter>,
    /// Where B's copies go.
    dst: PathBuf,
    max_rounds: usize,
    timeout: Duration,
    /// What a peer run keeps alive: the enrolling hub and A's listener.
    _peer: Option<(InProcessHub, PeerListener)>,
}

/// One timed mesh sync.
#[derive(Debug, Clone, Copy)]
struct MeshRun {
    time: Duration,
    rounds: usize,
    /// A's traffic (to the hub, from the hub) and B's.
    a: (u64, u64),
    b: (u64, u64),
    /// Where the time (and the disk writes) went: the publishing step, then the first round's
    /// `A.sync_now`, `B.sync_now` and `B.rescan` (background passes overlap them).
    phases: [(Duration, u64); 4],
    /// What the process (hub and both devices) wrote to files meanwhile (`write_bytes` of
    /// `/proc/self/io`: SQLite databases and WAL, B's files).
    disk_writes: u64,
    /// B synced with A directly (`b` is then B ↔ A; `a` is zero).
    via_peer: bool,
}

impl MeshSide {
    async fn start(root: &Path, in_process: bool, durability: Durability) -> Result<MeshSide> {
        if in_process {
            let hub =
                InProcessHub::open(&StoreConfig::SqliteWith(root.join("hub.db"), durability))?;
            let open = |device: &str| -> Result<_> {
                Ok(MeshClient::builder()
                    .user("bench".parse()?)
                    .device(device.parse()?)
                    .store(StoreConfig::SqliteWith(
                        root.join(format!("{device}.db")),
                        durability,
                    ))
                    .remote("hub".parse()?, hub.connect("bench".parse()?)))
            };
            let a = open("dev-a")?.build().await?;
            let b = open("dev-b")?.build().await?;
            report_problems("A", &a);
            report_problems("B", &b);
            println!("mesh: in-process hub (no HTTP; no bytes counted)");
            return Ok(MeshSide {
                a,
                b,
                count_a: Arc::default(),
                count_b: Arc::default(),
                dst: root.join("mesh-b"),
                max_rounds: 0,
                timeout: Duration::ZERO,
                _peer: None,
            });
        }
        let hub = Hub::builder()
            .data_dir(root.join("hub"))
            .durability(durability)
            .build()?;
        let user = "bench".parse()?;
        hub.accounts().add_user(&user)?;
        let token_a = hub
            .accounts()
            .add_device(&user, &"dev-a".parse()?, "device A", "laptop")?;
        let token_b = hub
            .accounts()
            .add_device(&user, &"dev-b".parse()?, "device B", "laptop")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let hub_addr = listener.local_addr()?;
        tokio::spawn(hub.serve(listener, std::future::pending()));
        let (proxy_a, count_a) = counting_proxy(hub_addr).await?;
        let (proxy_b, count_b) = counting_proxy(hub_addr).await?;
        let open = |device: &str, proxy: SocketAddr, token: &str| -> Result<_> {
            Ok(MeshClient::builder()
                .user("bench".parse()?)
                .device(device.parse()?)
                .store(StoreConfig::SqliteWith(
                    root.join(format!("{device}.db")),
                    durability,
                ))
                .remote(
                    "hub".parse()?,
                    HttpTransport::new(&format!("http://{proxy}"), token)?,
                ))
        };
        let a = open("dev-a", proxy_a, &token_a)?.build().await?;
        let b = open("dev-b", proxy_b, &token_b)?.build().await?;
        report_problems("A", &a);
        report_problems("B", &b);
        println!("mesh: hub at http://{hub_addr}, A through {proxy_a}, B through {proxy_b}");
        Ok(MeshSide {
            a,
            b,
            count_a,
            count_b,
            dst: root.join("mesh-b"),
            max_rounds: 0,
            timeout: Duration::ZERO,
            _peer: None,
        })
    }

    /// A and B enrolled with an in-process hub (their certificates), then syncing with each
    /// other alone: A listens on loopback, B reaches it through a counting proxy.
    async fn start_peer(root: &Path, durability: Durability) -> Result<MeshSide> {
        let hub = InProcessHub::open(&StoreConfig::SqliteWith(root.join("hub.db"), durability))?;
        let hub_id: RemoteId = "hub".parse()?;
        let open = |device: &str| -> Result<_> {
            Ok(MeshClient::builder()
                .user("bench".parse()?)
                .device(device.parse()?)
                .store(StoreConfig::SqliteWith(
                    root.join(format!("{device}.db")),
                    durability,
                ))
                .remote(hub_id.clone(), hub.connect("bench".parse()?)))
        };
        let a = open("dev-a")?.build().await?;
        let b = open("dev-b")?.build().await?;
        a.sync_now().await?;
        b.sync_now().await?;
        let config = |c: &MeshClient| {
            let (c, hub_id) = (c.clone(), hub_id.clone());
            async move {
                c.peer_config(&hub_id)
                    .await?
                    .ok_or_else(|| Error::from("not enrolled with the hub"))
            }
        };
        let listener = a
            .listen_peers("127.0.0.1:0".parse()?, config(&a).await?)
            .await?;
        let (proxy, count_b) = counting_proxy(listener.local_addr()).await?;
        b.add_remote(
            "dev-a".parse()?,
            PeerTransport::new(proxy, config(&b).await?)?,
        )?;
        // From here on the two devices sync with each other alone.
        a.remove_remote(&hub_id);
        b.remove_remote(&hub_id);
        report_problems("A", &a);
        report_problems("B", &b);
        println!(
            "mesh: peers: A listens on {}, B through {proxy} (TLS; one hop)",
            listener.local_addr()
        );
        Ok(MeshSide {
            a,
            b,
            count_a: Arc::default(),
            count_b,
            dst: root.join("mesh-b"),
            max_rounds: 0,
            timeout: Duration::ZERO,
            _peer: Some((hub, listener)),
        })
    }

    /// A new folder, known to both devices, with B's (empty) directory mapped to it.
    async fn folder(&self, name: &str) -> Result<(FolderId, PathBuf)> {
        let folder = self
            .a
            .create_folder(name, "files".parse().unwrap())
            .await?
            .id;
        self.a.sync_now().await?;
        self.b.sync_now().await?;
        let dst = self.dst.join(name);
        std::fs::create_dir_all(&dst)?;
        self.b.map_folder(&folder, &dst).await?;
        Ok((folder, dst))
    }

    /// Runs `publish` on the clock, then sync rounds until B's `dst` holds `want`.
    async fn timed<F>(
        &self,
        folder: &FolderId,
        dst: &Path,
        want: &Tree,
        publish: F,
    ) -> Result<MeshRun>
    where
        F: std::future::Future<Output = Result<()>>,
    {
        let (a0, b0) = (self.count_a.snapshot(), self.count_b.snapshot());
        let w0 = disk_writes();
        let start = Instant::now();
        publish.await?;
        let mut phases = [(start.elapsed(), disk_writes().saturating_sub(w0)); 4];
        let mut rounds = 0;
        loop {
            rounds += 1;
            let mut mark = (Instant::now(), disk_writes());
            let mut lap = |i: usize| {
                let now = (Instant::now(), disk_writes());
                if rounds == 1 {
                    phases[i] = (now.0 - mark.0, now.1.saturating_sub(mark.1));
                }
                mark = now;
            };
            self.a.sync_now().await?;
            lap(1);
            self.b.sync_now().await?;
            lap(2);
            self.b.rescan(folder).await?;
            lap(3);
            let time = start.elapsed();
            // Off the runtime's worker: hashing a big tree would stall the hub and the clients.
            if tokio::task::block_in_place(|| equal(want, dst))? {
                let (a1, b1) = (self.count_a.snapshot(), self.count_b.snapshot());
                return Ok(MeshRun {
                    time,
                    rounds,
                    a: (a1.0 - a0.0, a1.1 - a0.1),
                    b: (b1.0 - b0.0, b1.1 - b0.1),
                    phases,
                    disk_writes: disk_writes().saturating_sub(w0),
                    via_peer: self._peer.is_some(),
                });
            }
            if rounds >= self.max_rounds || start.elapsed() > self.timeout {
                let got = sizes(dst)?;
                return Err(format!(
                    "mesh did not converge after {rounds} rounds ({:.1} s): B has {} of {} \
                     files ({} of {} bytes)",
                    start.elapsed().as_secs_f64(),
                    got.len(),
                    want.len(),
                    got.values().sum::<u64>(),
                    want.values().map(|v| v.0).sum::<u64>(),
                )
                .into());
            }
        }
    }
}

/// Prints the mapping's errors, refusals and skipped files (there should be none).
fn report_problems(who: &'static str, client: &MeshClient) {
    let mut events = client.events();
    tokio::spawn(async move {
        let mut shown = 0;
        while let Some(e) = events.next().await {
            let Event::Mapping { event, .. } = e else {
                continue;
            };
            if matches!(
                event,
                MappingEvent::Error { .. }
                    | MappingEvent::Refused { .. }
                    | MappingEvent::Skipped { .. }
                    | MappingEvent::ConflictCopy { .. }
            ) {
                shown += 1;
                if shown <= 10 {
                    eprintln!("  mesh {who}: {event:?}");
                }
            }
        }
    });
}

/// Where the run's source data lives.
struct Data {
    small_src: PathBuf,
    big_src: PathBuf,
    big_file: PathBuf,
}

/// Cases (a), (b) and (c) with `mesh`, each followed by rsync into `rsync_dst`: the rows,
/// and the small files' folder and B's copy of it (for case (d)). The source trees are read
/// afresh, so a repeat starts from the big file as the previous (c) left it.
async fn abc(
    o: &Options,
    mesh: &MeshSide,
    rsync: &RsyncSide,
    rsync_dst: &Path,
    data: &Data,
    rng: &mut fastrand::Rng,
) -> Result<(Vec<Row>, FolderId, PathBuf)> {
    let (small_src, big_src, big_file) = (&data.small_src, &data.big_src, &data.big_file);
    let small_tree = tree(small_src)?;
    let big_tree = tree(big_src)?;
    let mut rows = Vec::new();

    // (a) many small files; (b) one big file.
    let case = format!("{} × {} KiB", o.files, o.file_kib);
    let (row, folder, dst) = new_mapping(
        mesh,
        rsync,
        rsync_dst,
        ("a", case, "time ≤ 2× rsync"),
        "small",
        small_src,
        &small_tree,
    )
    .await?;
    rows.push(row);
    let case = format!("1 × {} MiB", o.big_mib);
    let (row, big_folder, big_dst) = new_mapping(
        mesh,
        rsync,
        rsync_dst,
        ("b", case, "time ≤ 1.5× rsync; written ≤ 3× the file"),
        "big",
        big_src,
        &big_tree,
    )
    .await?;
    rows.push(row);

    // (c) 1 MiB changed in the middle of the big file, synced onto the previous copies.
    let case = format!("{} KiB changed in the big file", o.change_kib);
    println!("\n[c] {case}");
    // The new bytes and the expected result are prepared off the clock; the clock starts
    // before the write, since A's watcher may start publishing at once.
    let mut patch = vec![0u8; o.change_kib * 1024];
    rng.fill(&mut patch);
    let offset = ((o.big_mib << 20) - patch.len()) as u64 / 2;
    let (edited_tree, delta) = patched_tree(big_src, "big.bin", offset, &patch)?;
    println!(
        "  the edit in chunks: {} of {} chunks new ({}), new manifest {}: at least {} per side",
        delta.new_chunks,
        delta.chunks,
        mib(delta.new_bytes),
        mib(delta.manifest_bytes),
        mib(delta.new_bytes + delta.manifest_bytes),
    );
    let m = mesh
        .timed(&big_folder, &big_dst, &edited_tree, async {
            write_at(big_file, offset, &patch)?;
            mesh.a.rescan(&big_folder).await?;
            Ok(())
        })
        .await?;
    m.show();
    flush_disks();
    let r = rsync_checked(rsync, "big", rsync_dst, &edited_tree).await?;
    rows.push(Row {
        case,
        mesh: m,
        rsync: r,
        target: "time ≤ 1.5× rsync; ≤ 1.5 MiB per hop".into(),
    });

    Ok((rows, folder, dst))
}

/// A case that maps `src` on A as a new folder: mesh until B's copy holds `want`, then rsync
/// copying `module`. The row (with the case's `target`, as issue 16 sets it), the folder and
/// B's copy of it.
async fn new_mapping(
    mesh: &MeshSide,
    rsync: &RsyncSide,
    rsync_dst: &Path,
    (label, case, target): (&str, String, &str),
    module: &str,
    src: &Path,
    want: &Tree,
) -> Result<(Row, FolderId, PathBuf)> {
    println!("\n[{label}] {case}");
    let (folder, dst) = mesh.folder(module).await?;
    let m = mesh
        .timed(&folder, &dst, want, async {
            mesh.a.map_folder(&folder, src).await?;
            mesh.a.rescan(&folder).await?;
            Ok(())
        })
        .await?;
    m.show();
    flush_disks();
    let r = rsync_checked(rsync, module, rsync_dst, want).await?;
    flush_disks();
    let row = Row {
        case,
        mesh: m,
        rsync: r,
        target: target.into(),
    };
    Ok((row, folder, dst))
}

/// rsync copying `module` into `dst_root`, checked against `want`.
async fn rsync_checked(
    rsync: &RsyncSide,
    module: &str,
    dst_root: &Path,
    want: &Tree,
) -> Result<RsyncRun> {
    let (r, rdst) = rsync.run_into(module, dst_root).await?;
    r.show();
    if !equal(want, &rdst)? {
        return Err(format!("rsync's copy of {module} differs from the source").into());
    }
    Ok(r)
}

/// `--compare`: the hub over HTTP and the peer transport, each `repeat` times on fresh
/// replicas (the same data), with rsync after each case; then the medians side by side.
async fn compare(
    o: &Options,
    root: &Path,
    data: &Data,
    rsync: &RsyncSide,
    rng: &mut fastrand::Rng,
) -> Result<()> {
    let transports = ["hub", "peer"];
    // results[case][transport] = the runs' rows.
    let mut results: Vec<Vec<Vec<Row>>> = Vec::new();
    for i in 0..o.repeat {
        for (t, name) in transports.iter().enumerate() {
            let side_root = root.join(format!("{name}-{i}"));
            std::fs::create_dir_all(&side_root)?;
            // The previous run's device marked the source directories as its mappings; this
            // run's device is another one.
            for src in [&data.small_src, &data.big_src] {
                let _ = std::fs::remove_file(src.join(mesh::client::mapping::MARKER_FILE));
            }
            println!("\n==== {name}, run {} of {}", i + 1, o.repeat);
            let mut mesh = if *name == "peer" {
                MeshSide::start_peer(&side_root, o.durability).await?
            } else {
                MeshSide::start(&side_root, false, o.durability).await?
            };
            mesh.max_rounds = o.max_rounds;
            mesh.timeout = o.timeout;
            let (rows, _, _) =
                abc(o, &mesh, rsync, &side_root.join("rsync-dst"), data, rng).await?;
            mesh.a.close();
            mesh.b.close();
            drop(mesh);
            for (c, row) in rows.into_iter().enumerate() {
                if results.len() <= c {
                    results.push(transports.iter().map(|_| Vec::new()).collect());
                }
                results[c][t].push(row);
            }
            // The copies stay until the run ends: deleting them here would slow the next
            // side's file creations (see `SETTLE`).
        }
    }
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!(
        "medians of {} runs each, hub and peer alternating in one process on the same data",
        o.repeat
    );
    println!(
        "| case | transport | mesh time | rsync time (same runs) | mesh/rsync | mesh bytes on the wire (all hops) | rsync bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for per_case in &results {
        for (runs, name) in per_case.iter().zip(transports) {
            let mesh_t = median(runs.iter().map(|r| r.mesh.time.as_secs_f64()).collect());
            let rsync_t = median(runs.iter().map(|r| r.rsync.time.as_secs_f64()).collect());
            let bytes = median(
                runs.iter()
                    .map(|r| (r.mesh.bytes_a() + r.mesh.bytes_b()) as f64)
                    .collect(),
            );
            let rbytes = median(runs.iter().map(|r| r.rsync.wire as f64).collect());
            let times: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.2}", r.mesh.time.as_secs_f64()))
                .collect();
            println!(
                "| {} | {name} | {mesh_t:.2} s ({}) | {rsync_t:.2} s | {:.2}× | {} | {} |",
                runs[0].case,
                times.join(", "),
                mesh_t / rsync_t,
                mib(bytes as u64),
                mib(rbytes as u64),
            );
        }
    }
    Ok(())
}

// ---- rsync -----------------------------------------------------------------------------------

struct RsyncSide {
    daemon: std::process::Child,
    proxy: SocketAddr,
    counter: Arc<Counter>,
    dst: PathBuf,
}

/// One timed rsync run.
#[derive(Debug, Clone, Copy)]
struct RsyncRun {
    time: Duration,
    /// Through the proxy, both directions.
    wire: u64,
    /// rsync's `Total bytes sent` and `Total bytes received` (client side).
    sent: u64,
    received: u64,
}

impl RsyncSide {
    async fn start(root: &Path, modules: &[(&str, &Path)]) -> Result<RsyncSide> {
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let conf = root.join("rsyncd.conf");
        let mut text = format!(
            "use chroot = no\nlog file = {}\npid file = {}\n",
            root.join("rsyncd.log").display(),
            root.join("rsyncd.pid").display(),
        );
        // As root, rsyncd would otherwise switch to `nobody`, who cannot read the run's
        // private temporary directory.
        {
            use std::os::unix::fs::MetadataExt;
            let probe = root.join("owner-probe");
            std::fs::write(&probe, b"")?;
            let meta = std::fs::metadata(&probe)?;
            if meta.uid() == 0 {
                text.push_str(&format!("uid = {}\ngid = {}\n", meta.uid(), meta.gid()));
            }
            std::fs::remove_file(probe)?;
        }
        for (name, path) in modules {
            text.push_str(&format!(
                "[{name}]\n  path = {}\n  read only = yes\n",
                path.display()
            ));
        }
        std::fs::write(&conf, text)?;
        let log = std::fs::File::create(root.join("rsyncd.out"))?;
        let daemon = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg("--address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--config={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("rsync --daemon: {e} (is rsync installed?)"))?;
        let daemon_addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(daemon_addr).await.is_err() {
            if Instant::now() > deadline {
                return Err("rsync --daemon did not start listening within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (proxy, counter) = counting_proxy(daemon_addr).await?;
        println!("rsync: daemon on {daemon_addr}, reached through {proxy}");
        Ok(RsyncSide {
            daemon,
            proxy,
            counter,
            dst: root.join("rsync-dst"),
        })
    }

    /// One timed copy of `module` into `dst_root/module` (a fresh directory copies it all).
    async fn run_into(&self, module: &str, dst_root: &Path) -> Result<(RsyncRun, PathBuf)> {
        let dst = dst_root.join(module);
        std::fs::create_dir_all(&dst)?;
        let url = format!("rsync://{}/{module}/", self.proxy);
        let (u0, d0) = self.counter.snapshot();
        let start = Instant::now();
        let dst2 = dst.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("rsync")
                .arg("-a")
                .arg("--stats")
                .arg(&url)
                .arg(format!("{}/", dst2.display()))
                .output()
        })
        .await??;
        let time = start.elapsed();
        let (u1, d1) = self.counter.snapshot();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "rsync failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let stat = |label: &str| -> u64 {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.replace(',', "").parse().ok())
                .unwrap_or(0)
        };
        Ok((
            RsyncRun {
                time,
                wire: (u1 - u0) + (d1 - d0),
                sent: stat("Total bytes sent:"),
                received: stat("Total bytes received:"),
            },
            dst,
        ))
    }
}

impl Drop for RsyncSide {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

// ---- the run ---------------------------------------------------------------------------------

impl MeshRun {
    fn bytes_a(&self) -> u64 {
        self.a.0 + self.a.1
    }

    fn bytes_b(&self) -> u64 {
        self.b.0 + self.b.1
    }

    fn show(&self) {
        let [p, sa, sb, rb] = self
            .phases
            .map(|(d, w)| format!("{:.2} s, {} written", d.as_secs_f64(), mib(w)));
        println!(
            "  mesh:  {:.2} s in {} round(s): publish on A {p}; first round: A sync {sa}; \
             B sync {sb}; B rescan {rb}",
            self.time.as_secs_f64(),
            self.rounds,
        );
        if self.via_peer {
            println!(
                "         B → A {}, A → B {} (one hop, TLS); written to disk {}",
                mib(self.b.0),
                mib(self.b.1),
                mib(self.disk_writes),
            );
            return;
        }
        println!(
            "         A → hub {}, hub → A {}; B → hub {}, hub → B {}; written to disk {}",
            mib(self.a.0),
            mib(self.a.1),
            mib(self.b.0),
            mib(self.b.1),
            mib(self.disk_writes),
        );
    }
}

impl RsyncRun {
    fn show(&self) {
        println!(
            "  rsync: {:.2} s; {} on the wire (rsync's stats: sent {}, received {})",
            self.time.as_secs_f64(),
            mib(self.wire),
            mib(self.sent),
            mib(self.received)
        );
    }
}

struct Row {
    case: String,
    mesh: MeshRun,
    rsync: RsyncRun,
    target: String,
}

fn mib(b: u64) -> String {
    if b < MIB {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.2} MiB", b as f64 / MIB as f64)
    }
}

fn main() -> Result<()> {
    let o = Options::parse()?;
    settle(&o);
    if let Some(rate) = o.link {
        let _ = LINK.set(rate);
        println!(
            "links: {:.1} MB/s per direction through every proxy",
            rate as f64 / 1e6
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&o));
    // The clients' and hub's tasks end with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
    // `run` deleted files: case (d) the small files on both sides, and then its directory
    // unless told to keep it.
    stamp_cleanup(&o);
    result
}

async fn run(o: &Options) -> Result<()> {
    let tmp = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("folder-bench-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("folder-bench-").tempdir()?,
    };
    let root = tmp.path().to_path_buf();
    println!("run directory: {}", root.display());

    // The data, written once and used by both sides.
    let small_src = root.join("data/small");
    let big_src = root.join("data/big");
    let big_file = big_src.join("big.bin");
    let mut rng = fastrand::Rng::with_seed(0x6d65_7368);
    let t = Instant::now();
    for i in 0..o.files {
        let dir = small_src.join(format!("d{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir)?;
        }
        random_file(
            &mut rng,
            &dir.join(format!("f{i:05}.bin")),
            o.file_kib * 1024,
        )?;
    }
    std::fs::create_dir_all(&big_src)?;
    random_file(&mut rng, &big_file, o.big_mib << 20)?;
    flush_disks();
    println!(
        "data: {} files of {} KiB and one file of {} MiB, written in {:.1} s",
        o.files,
        o.file_kib,
        o.big_mib,
        t.elapsed().as_secs_f64()
    );

    let rsync = RsyncSide::start(&root, &[("small", &small_src), ("big", &big_src)]).await?;
    let data = Data {
        small_src: small_src.clone(),
        big_src: big_src.clone(),
        big_file: big_file.clone(),
    };
    if o.compare {
        compare(o, &root, &data, &rsync, &mut rng).await?;
        drop(rsync);
        if o.keep {
            println!("kept {}", tmp.keep().display());
        }
        return Ok(());
    }
    let mut mesh = if o.peer {
        MeshSide::start_peer(&root, o.durability).await?
    } else {
        MeshSide::start(&root, o.in_process, o.durability).await?
    };
    mesh.max_rounds = o.max_rounds;
    mesh.timeout = o.timeout;
    let (rows, folder, dst) = abc(o, &mesh, &rsync, &rsync.dst, &data, &mut rng).await?;

    // (d) every small file deleted (mesh only): the publishing of 10,000 deletions against
    // that of 10,000 creations in (a). A maps the same directory again without a watcher (it
    // carries on from the directory's index), so that the deletions are made off the clock and
    // the clock covers the publishing pass alone, as in (a).
    let created = rows[0].mesh.phases[0].0;
    let small_tree = tree(&small_src)?;
    println!("\n[d] the {} small files deleted", o.files);
    mesh.a
        .map_folder_with(
            &folder,
            &small_src,
            mesh::client::mapping::MappingOptions::default()
                .with_watch(false)
                .with_follow_remote(false),
        )
        .await?;
    let t = Instant::now();
    for rel in small_tree.keys() {
        std::fs::remove_file(small_src.join(rel))?;
    }
    let unlinked = t.elapsed();
    flush_disks();
    let m = mesh
        .timed(&folder, &dst, &Tree::new(), async {
            mesh.a.rescan(&folder).await?;
            Ok(())
        })
        .await?;
    m.show();
    println!(
        "  publish on A: {} deletions {:.2} s, {} creations {:.2} s: {:.2}× (target ≤ 2×; the \
         deletions themselves took {:.2} s, off the clock)",
        o.files,
        m.phases[0].0.as_secs_f64(),
        o.files,
        created.as_secs_f64(),
        m.phases[0].0.as_secs_f64() / created.as_secs_f64(),
        unlinked.as_secs_f64(),
    );

    // The table.
    println!();
    println!(
        "| case | mesh time | rsync time | mesh/rsync | mesh bytes (A↔hub + hub↔B = total; with --peer: 0 + B↔A) | rsync bytes (wire; sent/received) | mesh rounds | target |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2}× | {} + {} = **{}** | {} ({} / {}) | {} | {} |",
            r.case,
            r.mesh.time.as_secs_f64(),
            r.rsync.time.as_secs_f64(),
            r.mesh.time.as_secs_f64() / r.rsync.time.as_secs_f64(),
            mib(r.mesh.bytes_a()),
            mib(r.mesh.bytes_b()),
            mib(r.mesh.bytes_a() + r.mesh.bytes_b()),
            mib(r.rsync.wire),
            mib(r.rsync.sent),
            mib(r.rsync.received),
            r.mesh.rounds,
            r.target,
        );
    }

    mesh.a.close();
    mesh.b.close();
    drop(rsync);
    if o.keep {
        println!("kept {}", tmp.keep().display());
    }
    Ok(())
}
