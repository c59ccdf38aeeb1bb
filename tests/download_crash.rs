//! A device killed (SIGKILL) in the middle of downloading a large file of a mapped folder
//! leaves no partial file where the file belongs, and on restart resumes the download from the
//! chunks that had already arrived (kept in the file's temporary copy, where a large file's
//! chunks are written as they arrive), then writes the whole file.
//!
//! The parent runs a hub on loopback and the publishing device; the receiving device is a
//! child process (this test binary re-run with an environment variable), killed once it has
//! reported download progress.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use futures::StreamExt;
use mesh::client::mapping::MappingOptions;
use mesh::client::store::StoreConfig;
use mesh::client::transport::HttpTransport;
use mesh::client::{Event, MeshClient, SyncOptions, TransferDirection};
use mesh::hub::Hub;

const CHILD_ENV: &str = "MESH_TEST_DOWNLOAD_CHILD";
const CHILD_TEST: &str = "download_receiver_child";
const SIZE: usize = 40 << 20;

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn quiet() -> MappingOptions {
    MappingOptions::default()
        .with_watch(false)
        .with_follow_remote(false)
}

/// Not a test on its own: the receiving device, run as a child process by
/// [`a_killed_download_leaves_no_partial_file_and_resumes`].
#[test]
fn download_receiver_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = args.split('\n');
    let (url, token, folder, dir, store) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let b = MeshClient::builder()
            .user("ann".parse().unwrap())
            .device("ann-desktop".parse().unwrap())
            .store(StoreConfig::Sqlite(store.into()))
            .sync_options(SyncOptions::default().with_auto(false))
            .remote(
                "hub".parse().unwrap(),
                HttpTransport::new(&url, &token).unwrap(),
            )
            .build()
            .await
            .unwrap();
        let mut events = b.events();
        let most = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = most.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let Event::Transfer {
                    direction: TransferDirection::Download,
                    done_bytes,
                    ..
                } = e
                {
                    seen.fetch_max(done_bytes, std::sync::atomic::Ordering::Relaxed);
                    println!("progress {done_bytes}");
                }
            }
        });
        b.sync_now().await.unwrap();
        let folder = folder.parse().unwrap();
        b.map_folder_with(&folder, dir, quiet()).await.unwrap();
        b.rescan(&folder).await.unwrap();
        let stored = b.blob_usage().await.unwrap().bytes;
        // (The last progress events may still be on their way: a few yields let them in.)
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        println!(
            "downloaded {}",
            most.load(std::sync::atomic::Ordering::Relaxed)
        );
        println!("done {stored}");
    });
}

/// When to kill the receiver.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    Never,
    /// Once it reports download progress past 1 MiB.
    MidDownload,
    /// As soon as its temporary file appears in `dir` (the file is being written).
    MidWrite,
}

/// What a run of the receiver did.
struct Run {
    /// Whether it was killed.
    killed: bool,
    /// The most its download reported as done in one round (bytes it fetched).
    downloaded: u64,
    /// The bytes its blob store held when it finished.
    stored: Option<u64>,
}

/// Runs the receiver.
fn run_child(env: &str, kill: Kill, dir: &Path) -> Run {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let watcher = (kill == Kill::MidWrite).then(|| {
        let (pid, dir) = (child.id().to_string(), dir.to_owned());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                let writing = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(mesh::client::mapping::TEMP_PREFIX)
                    });
                if writing {
                    let _ = Command::new("kill").args(["-9", &pid]).status();
                    return true;
                }
                std::thread::yield_now();
            }
            false
        })
    });
    let kill_on_progress = kill == Kill::MidDownload;
    let mut killed = false;
    let mut done = None;
    let mut downloaded = 0;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // Lines may follow the test harness's own output on the same line.
        let field = |name: &str| -> Option<u64> {
            let at = line.find(name)?;
            line[at + name.len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        if kill_on_progress && field("progress ").is_some_and(|n| n > 1 << 20) {
            // SIGKILL: no destructor, no flush, no clean close.
            let _ = child.kill();
            killed = true;
            break;
        }
        if let Some(n) = field("downloaded ") {
            downloaded = n;
        }
        if let Some(n) = field("done ") {
            done = Some(n);
        }
    }
    let status = child.wait().unwrap();
    if let Some(w) = watcher {
        killed = w.join().unwrap();
    }
    if !killed {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "receiver failed ({status}):\n{err}");
    }
    Run {
        killed,
        downloaded,
        stored: done,
    }
}

fn visible_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !n.starts_with(mesh::client::mapping::TEMP_PREFIX)
                && n != mesh::client::mapping::MARKER_FILE
        })
        .collect()
}

#[test]
fn a_killed_download_leaves_no_partial_file_and_resumes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = noise(7, SIZE);
    let (url, token_b, folder, _hub) = rt.block_on(async {
        let hub = Hub::builder()
            .data_dir(tmp.path().join("hub"))
            .build()
            .unwrap();
        let ann = "ann".parse().unwrap();
        hub.accounts().add_user(&ann).unwrap();
        let ta = hub
            .accounts()
            .add_device(&ann, &"ann-laptop".parse().unwrap(), "laptop", "laptop")
            .unwrap();
        let tb = hub
            .accounts()
            .add_device(&ann, &"ann-desktop".parse().unwrap(), "desktop", "desktop")
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(hub.clone().serve(listener, std::future::pending()));
        let a = MeshClient::builder()
            .user("ann".parse().unwrap())
            .device("ann-laptop".parse().unwrap())
            .remote(
                "hub".parse().unwrap(),
                HttpTransport::new(&url, &ta).unwrap(),
            )
            .build()
            .await
            .unwrap();
        let folder = a
            .create_folder("Videos", "files".parse().unwrap())
            .await
            .unwrap()
            .id;
        let dir_a = tmp.path().join("a");
        std::fs::create_dir(&dir_a).unwrap();
        std::fs::write(dir_a.join("movie.bin"), &data).unwrap();
        a.map_folder_with(&folder, &dir_a, quiet()).await.unwrap();
        a.rescan(&folder).await.unwrap();
        a.sync_now().await.unwrap();
        (url, tb, folder, (hub, a))
    });
    let dir_b = tmp.path().join("b");
    std::fs::create_dir(&dir_b).unwrap();
    let env = format!(
        "{url}\n{token_b}\n{folder}\n{}\n{}",
        dir_b.display(),
        tmp.path().join("b.db").display()
    );
    // The guard keeps the hub serving while the children run.
    let _guard = rt.enter();

    let first = run_child(&env, Kill::MidDownload, &dir_b);
    assert!(
        first.killed,
        "the receiver finished before it could be killed"
    );
    // Nothing where the file belongs (at most a temporary file, which is not the file).
    assert!(
        visible_files(&dir_b).is_empty(),
        "after the kill: {:?}",
        visible_files(&dir_b)
    );
    // Killed again while the file is being written: still nothing visible.
    let second = run_child(&env, Kill::MidWrite, &dir_b);
    assert!(
        second.killed,
        "the receiver wrote the file before it could be killed"
    );
    assert!(
        visible_files(&dir_b).is_empty(),
        "after a kill during the write: {:?}",
        visible_files(&dir_b)
    );

    let last = run_child(&env, Kill::Never, &dir_b);
    // The restarted device kept what it downloaded before the kill (more than 1 MiB): it
    // fetched only the rest.
    assert!(
        last.downloaded > 0 && last.downloaded < (SIZE - (1 << 20)) as u64,
        "what was downloaded before the kill did not survive it: {} of {SIZE} bytes fetched again",
        last.downloaded
    );
    assert_eq!(visible_files(&dir_b), vec!["movie.bin".to_owned()]);
    assert!(std::fs::read(dir_b.join("movie.bin")).unwrap() == data);
    // No temporary file is left (only the file and the mapping's marker), and the store
    // holds each chunk once.
    let all: Vec<_> = std::fs::read_dir(&dir_b).unwrap().flatten().collect();
    assert_eq!(all.len(), 2);
    let stored = last.stored.unwrap();
    assert!(stored < SIZE as u64 + 1_000_000, "stored {stored}");
}
