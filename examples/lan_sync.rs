//! Two devices syncing on a LAN with the hub switched off, then with the hub again.
//!
//! ```text
//! cargo run --example lan_sync
//! ```
//!
//! Everything runs in this process, on the loopback interface only. A hub on a free 127.0.0.1
//! port (data in a temporary directory) enrolls Ann's laptop and phone (SQLite stores in
//! temporary directories); they sync a to-do list once through it, which also gives each
//! device its certificate. The laptop listens for peers on 127.0.0.1 and publishes that
//! address in its device record, which reaches the phone through the hub. Then the hub stops.
//! The phone finds the laptop's address in the record and restarts with the laptop as a second
//! remote (a [`PeerTransport`] built from its enrollment with [`MeshClient::peer_config`]);
//! both write, and they converge with no hub.
//! Finally the hub starts again on the same data and both devices converge with it: every
//! to-do once, nothing left to move. A third device, the tablet, then finds the laptop by mDNS
//! (on the loopback interface alone, on a port of the example's own) and syncs with it as the
//! remote `lan:ann-laptop`. The example checks what it prints and exits with an error if any
//! step does not hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh::client::peer::{MdnsConfig, PeerTransport};
use mesh::client::store::StoreConfig;
use mesh::client::transport::{HttpConfig, HttpTransport};
use mesh::client::{MeshClient, SyncOptions};
use mesh::core::id::{FeedName, FolderId, RemoteId};
use mesh::core::model::{EntryDraft, Field, FolderKind, Query};
use mesh::hub::Hub;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How many sync rounds the devices may take to settle before the example gives up.
const ROUNDS: usize = 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("hub");

    // 1. A hub of our own, as `mesh-hub --listen 127.0.0.1:0 --data DIR` would run it.
    let hub = Hub::builder().data_dir(&data).open()?;
    let ann = "ann".parse()?;
    hub.accounts().add_user(&ann)?;
    let token_a =
        hub.accounts()
            .add_device(&ann, &"ann-laptop".parse()?, "Ann's laptop", "laptop")?;
    let token_b = hub
        .accounts()
        .add_device(&ann, &"ann-phone".parse()?, "Ann's phone", "phone")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hub_addr = listener.local_addr()?;
    let url = format!("http://{hub_addr}");
    let running = Running::start(hub, listener);
    println!("hub at {url}");

    let hub_id: RemoteId = "hub".parse()?;
    let to_hub = |token: &str| -> Result<HttpTransport, Error> {
        // Few, short retries: while the hub is away a sync with it fails quickly.
        let config = HttpConfig::default()
            .with_connect_timeout(Duration::from_secs(2))
            .with_retries(1)
            .with_backoff_min(Duration::from_millis(10))
            .with_backoff_max(Duration::from_millis(50));
        Ok(HttpTransport::with_config(&url, token, config)?)
    };
    let open = |device: &str, token: &str| -> Result<_, Error> {
        Ok(MeshClient::builder()
            .user("ann".parse()?)
            .device(device.parse()?)
            .store(StoreConfig::Sqlite(store_path(tmp.path(), device)))
            .sync_options(SyncOptions::default().with_auto(false))
            .remote(hub_id.clone(), to_hub(token)?))
    };
    let laptop = open("ann-laptop", &token_a)?.build().await?;
    let phone = open("ann-phone", &token_b)?.build().await?;

    step("the laptop writes a to-do; both devices sync through the hub");
    let folder = laptop
        .create_folder("Groceries", FolderKind::app("todo")?)
        .await?
        .id;
    let todos = laptop
        .create_feed(&folder, "todos".parse()?, "To do")
        .await?;
    put(&laptop, &folder, &todos, "Buy milk").await?;
    settle(&[&laptop, &phone], None).await?;
    expect(&phone, "phone", &folder, &todos, &["Buy milk"]).await?;

    // Meeting the hub enrolled each device: its certificate is what peers check.
    let laptop_peer = laptop
        .peer_config(&hub_id)
        .await?
        .ok_or("the laptop holds no certificate")?;
    let phone_peer = phone
        .peer_config(&hub_id)
        .await?
        .ok_or("the phone holds no certificate")?;

    step("the laptop listens for peers and says where in its device record");
    let peers = laptop
        .listen_peers(SocketAddr::from(([127, 0, 0, 1], 0)), laptop_peer)
        .await?;
    laptop.publish_peer_addresses(&[peers.local_addr()]).await?;
    println!("   laptop listens on {}", peers.local_addr());
    settle(&[&laptop, &phone], None).await?;

    step("the hub stops");
    running.stop().await?;

    step("the phone finds the laptop's address in its record and restarts with it as a remote");
    let found = phone.peer_addresses().await?;
    for p in &found {
        println!("   phone: {} listens on {}", p.device, p.addr);
    }
    let laptop_addr = match found.as_slice() {
        [one] if one.device.as_str() == "ann-laptop" => one.addr,
        _ => return Err(format!("expected the laptop's address, found {found:?}").into()),
    };
    phone.close();
    drop(phone);
    let laptop_id: RemoteId = "ann-laptop".parse()?;
    let phone = open("ann-phone", &token_b)?
        .remote(
            laptop_id.clone(),
            PeerTransport::new(laptop_addr, phone_peer)?,
        )
        .build()
        .await?;

    step("both write with the hub away; they converge through the peer connection");
    put(&laptop, &folder, &todos, "Buy eggs").await?;
    put(&phone, &folder, &todos, "Buy bread").await?;
    for (remote, outcome) in phone.sync_each().await? {
        match outcome {
            Ok(r) if remote == laptop_id => {
                println!(
                    "   phone <-> laptop: sent {}, received {}",
                    r.sent, r.received
                )
            }
            Err(e) if remote == hub_id => println!("   phone <-> hub: unreachable ({e})"),
            other => return Err(format!("{remote}: unexpected outcome {other:?}").into()),
        }
    }
    let all = ["Buy bread", "Buy eggs", "Buy milk"];
    expect(&laptop, "laptop", &folder, &todos, &all).await?;
    expect(&phone, "phone", &folder, &todos, &all).await?;

    step("the hub starts again on the same data; both devices converge with it");
    let hub = Hub::builder().data_dir(&data).open()?;
    let running = Running::start(hub, tokio::net::TcpListener::bind(hub_addr).await?);
    let moved = settle(&[&laptop, &phone], Some(&hub_id)).await?;
    println!("   {moved} versions moved through the hub");
    expect(&laptop, "laptop", &folder, &todos, &all).await?;
    expect(&phone, "phone", &folder, &todos, &all).await?;
    // A third device that only ever meets the hub sees what the two wrote, each once.
    let token_c = running.hub.accounts().add_device(
        &ann,
        &"ann-tablet".parse()?,
        "Ann's tablet",
        "tablet",
    )?;
    let tablet = open("ann-tablet", &token_c)?.build().await?;
    tablet.sync_now().await?;
    expect(&tablet, "tablet", &folder, &todos, &all).await?;

    step("the tablet finds the laptop by mDNS on the loopback interface alone, and syncs with it");
    // A free UDP port of this example's own for the mDNS group (not 5353: nothing else on the
    // machine takes part), multicast TTL 1, interface 127.0.0.1.
    let mdns = MdnsConfig::loopback(
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port(),
    );
    let laptop_announces = laptop
        .discover_peers(
            mdns.clone(),
            Some(peers.local_addr()),
            laptop.peer_config(&hub_id).await?.ok_or("no certificate")?,
        )
        .await?;
    let tablet_finds = tablet
        .discover_peers(
            mdns,
            None,
            tablet.peer_config(&hub_id).await?.ok_or("no certificate")?,
        )
        .await?;
    let lan_laptop: RemoteId = "lan:ann-laptop".parse()?;
    let mut remotes = tablet_finds.subscribe_remotes();
    tokio::time::timeout(
        Duration::from_secs(10),
        remotes.wait_for(|r| r.contains(&lan_laptop)),
    )
    .await
    .map_err(|_| "the tablet did not find the laptop within 10 s")??;
    for p in tablet_finds.nearby() {
        println!(
            "   tablet: {} announces {} (proved at the handshake)",
            p.device, p.addr
        );
    }
    put(&laptop, &folder, &todos, "Buy tea").await?;
    for (remote, outcome) in tablet.sync_each().await? {
        let r = outcome.map_err(|e| format!("tablet <-> {remote}: {e}"))?;
        println!(
            "   tablet <-> {remote}: sent {}, received {}",
            r.sent, r.received
        );
    }
    let all = ["Buy bread", "Buy eggs", "Buy milk", "Buy tea"];
    expect(&tablet, "tablet", &folder, &todos, &all).await?;
    laptop_announces.close().await;
    drop(tablet_finds);

    println!(
        "\n== converged: the laptop, the phone and the hub hold the same {} to-dos, none twice, \
         and the tablet met the laptop by mDNS",
        all.len() - 1
    );
    drop(peers);
    for c in [&laptop, &phone, &tablet] {
        c.close();
    }
    running.stop().await?;
    Ok(())
}

/// A hub serving on a loopback listener until stopped.
struct Running {
    hub: Hub,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), mesh::hub::HubError>>,
}

impl Running {
    fn start(hub: Hub, listener: tokio::net::TcpListener) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Running { hub, stop, task }
    }

    /// Stops serving, waits (at most 10 s) until the server is down, and lets the data
    /// directory go.
    async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .map_err(|_| "the hub did not stop within 10 s")???;
        drop(self.hub);
        Ok(())
    }
}

fn store_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.db"))
}

async fn put(c: &MeshClient, folder: &FolderId, feed: &FeedName, title: &str) -> Result<(), Error> {
    c.put(folder, feed, EntryDraft::new(title, json!({"done": false})))
        .await?;
    println!("   {} writes {title:?}", c.device());
    Ok(())
}

/// Syncs each client in turn until two whole rounds in a row move nothing (at most
/// [`ROUNDS`] rounds); with `only`, counts what moves with that remote alone and requires
/// every session with it to succeed. Returns how many versions moved in all.
async fn settle(clients: &[&MeshClient], only: Option<&RemoteId>) -> Result<usize, Error> {
    let (mut quiet, mut total) = (0, 0);
    for _ in 0..ROUNDS {
        let mut moved = 0;
        for c in clients {
            for (remote, outcome) in c.sync_each().await? {
                if only.is_some_and(|o| o != &remote) {
                    continue;
                }
                let r = outcome?;
                moved += r.sent + r.received;
            }
        }
        total += moved;
        quiet = if moved == 0 { quiet + 1 } else { 0 };
        if quiet == 2 {
            return Ok(total);
        }
    }
    Err(format!("the devices did not settle in {ROUNDS} rounds").into())
}

/// Checks that `c` holds exactly the to-dos `titles` (each once, no conflicts) and prints them.
async fn expect(
    c: &MeshClient,
    name: &str,
    folder: &FolderId,
    feed: &FeedName,
    titles: &[&str],
) -> Result<(), Error> {
    let entries = c
        .query(folder, feed, Query::new().order_by(Field::Title, false))
        .await?;
    let got: Vec<&str> = entries.iter().map(|e| e.content.title.as_str()).collect();
    println!("   {name} has {got:?}");
    if got != titles {
        return Err(format!("{name} holds {got:?}, expected {titles:?}").into());
    }
    if entries.iter().any(|e| !e.conflicts.is_empty()) {
        return Err(format!("{name} holds conflicts").into());
    }
    Ok(())
}

fn step(s: &str) {
    println!("\n== {s}");
}
