//! A folder of files kept in sync between two devices through a real hub over HTTP.
//!
//! ```text
//! cargo run --example folder_sync
//! ```
//!
//! starts a hub in this process on a free 127.0.0.1 port (data in a temporary directory). Ann's
//! laptop and phone each map a directory of their own to the same folder: a file written on the
//! laptop appears on the phone, the phone's edit comes back to the laptop, and a deletion on the
//! laptop removes the file on the phone. Every transfer and mapping event is printed as it
//! happens. The example exits with an error if a change does not arrive within a bounded
//! number of sync rounds.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use mesh::client::store::StoreConfig;
use mesh::client::sync::{MappingEvent, TransferDirection};
use mesh::client::transport::HttpTransport;
use mesh::client::{Event, MeshClient};
use mesh::core::id::FolderId;
use mesh::core::model::FolderKind;
use mesh::hub::Hub;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How many sync rounds a change may take before the example gives up.
const ROUNDS: usize = 50;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let tmp = tempfile::tempdir()?;

    // A hub of our own, as `mesh-hub --listen 127.0.0.1:0 --data DIR` would run it.
    let hub = Hub::builder().data_dir(tmp.path().join("hub")).build()?;
    let ann = "ann".parse()?;
    hub.accounts().add_user(&ann)?;
    let token_a =
        hub.accounts()
            .add_device(&ann, &"ann-laptop".parse()?, "Ann's laptop", "laptop")?;
    let token_b = hub
        .accounts()
        .add_device(&ann, &"ann-phone".parse()?, "Ann's phone", "phone")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(hub.serve(listener, std::future::pending()));
    println!("hub at {url}");

    let open = |device: &str, token: &str| -> Result<_, Error> {
        Ok(MeshClient::builder()
            .user("ann".parse()?)
            .device(device.parse()?)
            .store(StoreConfig::Sqlite(tmp.path().join(format!("{device}.db"))))
            .remote("hub".parse()?, HttpTransport::new(&url, token)?))
    };
    let laptop = open("ann-laptop", &token_a)?.build().await?;
    let phone = open("ann-phone", &token_b)?.build().await?;
    print_events("laptop", &laptop);
    print_events("phone ", &phone);

    // The laptop creates the folder; the phone (same user) sees it once both have synced.
    let folder = laptop.create_folder("Documents", FolderKind::Files).await?;
    laptop.sync_now().await?;
    phone.sync_now().await?;
    let dir_a = tmp.path().join("laptop-Documents");
    let dir_b = tmp.path().join("phone-Documents");
    std::fs::create_dir_all(&dir_a)?;
    std::fs::create_dir_all(&dir_b)?;
    laptop.map_folder(&folder.id, &dir_a).await?;
    phone.map_folder(&folder.id, &dir_b).await?;
    println!("laptop maps {}", dir_a.display());
    println!("phone  maps {}", dir_b.display());

    // 1. A file written on the laptop appears on the phone.
    let text = notes(12_000); // about 400 KB: a handful of content-defined chunks
    std::fs::create_dir_all(dir_a.join("notes"))?;
    std::fs::write(dir_a.join("notes/todo.txt"), &text)?;
    println!(
        "\n== the laptop writes notes/todo.txt ({} bytes)",
        text.len()
    );
    converge(&laptop, &phone, &folder.id, || {
        read(&dir_b.join("notes/todo.txt")).as_deref() == Some(text.as_str())
    })
    .await?;
    println!("== the phone has notes/todo.txt, same content");

    // 2. The phone edits one line in the middle; the edit comes back to the laptop, and only
    // the chunk around it (plus the file's list of chunks) moves.
    let edited = text.replacen("006000 ", "006000 (edited on the phone) ", 1);
    std::fs::write(dir_b.join("notes/todo.txt"), &edited)?;
    println!("\n== the phone edits notes/todo.txt");
    converge(&phone, &laptop, &folder.id, || {
        read(&dir_a.join("notes/todo.txt")).as_deref() == Some(edited.as_str())
    })
    .await?;
    println!("== the laptop has the phone's edit");

    // 3. The laptop deletes it; the deletion reaches the phone.
    std::fs::remove_file(dir_a.join("notes/todo.txt"))?;
    println!("\n== the laptop deletes notes/todo.txt");
    converge(&laptop, &phone, &folder.id, || {
        !dir_b.join("notes/todo.txt").exists()
    })
    .await?;
    println!("== the phone no longer has notes/todo.txt");

    // Unmapping stops syncing and leaves the files where they are.
    std::fs::write(dir_b.join("kept.txt"), "still here")?;
    phone.unmap_folder(&folder.id).await?;
    laptop.unmap_folder(&folder.id).await?;
    println!(
        "\nunmapped; the phone's directory still holds kept.txt: {}",
        dir_b.join("kept.txt").exists()
    );
    // Let the last events print before closing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    laptop.close();
    phone.close();
    Ok(())
}

/// Publishes `from`'s local changes and applies them on `to`, round after round, until `done`
/// holds; fails after [`ROUNDS`] rounds.
async fn converge(
    from: &MeshClient,
    to: &MeshClient,
    folder: &FolderId,
    done: impl Fn() -> bool,
) -> Result<(), Error> {
    for _ in 0..ROUNDS {
        from.rescan(folder).await?;
        from.sync_now().await?;
        to.sync_now().await?;
        to.rescan(folder).await?;
        if done() {
            return Ok(());
        }
    }
    Err(format!("the change did not arrive after {ROUNDS} sync rounds").into())
}

/// `lines` numbered lines of made-up words (varied enough for content-defined chunking to
/// find its boundaries).
fn notes(lines: usize) -> String {
    const WORDS: [&str; 12] = [
        "milk", "eggs", "bread", "call", "plumber", "pay", "rent", "book", "train", "tickets",
        "water", "plants",
    ];
    let mut seed = 0x2545_f491_u32;
    let mut out = String::new();
    for i in 0..lines {
        out.push_str(&format!("{i:06}"));
        for _ in 0..5 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            out.push(' ');
            out.push_str(WORDS[seed as usize % WORDS.len()]);
        }
        out.push('\n');
    }
    out
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Prints a client's transfer and mapping events as they happen.
fn print_events(who: &'static str, client: &MeshClient) {
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                Event::Transfer {
                    direction,
                    done_bytes,
                    total_bytes,
                    ..
                } => {
                    let way = match direction {
                        TransferDirection::Upload => "upload",
                        TransferDirection::Download => "download",
                    };
                    println!("  [{who}] {way} {done_bytes}/{total_bytes} bytes");
                }
                Event::Mapping { event, .. } => match event {
                    MappingEvent::Scanned { paths, published } => {
                        println!("  [{who}] scanned {paths} paths, published {published}")
                    }
                    MappingEvent::Applied { path, deleted } => println!(
                        "  [{who}] {} {path}",
                        if deleted { "deleted" } else { "wrote" }
                    ),
                    MappingEvent::ConflictCopy { path, copy } => {
                        println!("  [{who}] conflict on {path}: the other version kept as {copy}")
                    }
                    other => println!("  [{who}] {other:?}"),
                },
                _ => {}
            }
        }
    });
}
