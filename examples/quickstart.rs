//! The mesh quickstart: a tour of the SDK in one process.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! An in-process hub; Ann's laptop and phone; Bob, invited into Ann's folder. They create a
//! folder, share it, write on both devices, take the phone offline, make conflicting edits,
//! reconnect, see the conflict event and resolve it. Each client keeps its store in a
//! temporary directory, and every event is printed as it happens.

use std::time::Duration;

use futures::StreamExt;
use mesh::client::store::StoreConfig;
use mesh::client::transport::{InProcessHub, LinkControl, SimConfig, SimNetwork};
use mesh::client::{ChangeKind, ChangeSource, Event, MeshClient};
use mesh::core::model::{EntryDraft, FolderKind, Query, Role};
use mesh::core::replica::Resolution;
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let hub = InProcessHub::new();
    // Links through a (fault-free) simulated network, so that a device can go offline.
    let net = SimNetwork::new(SimConfig::default());

    let open = |user: &str, device: &str, name: &str| {
        let (transport, link) = net.wrap(hub.connect(user.parse().expect("user id")));
        let builder = MeshClient::builder()
            .user(user.parse().expect("user id"))
            .device(device.parse().expect("device id"))
            .device_name(name, "device")
            .store(StoreConfig::Sqlite(dir.path().join(format!("{device}.db"))))
            .remote("hub".parse().expect("remote id"), transport);
        (builder, link)
    };
    let (b, _) = open("ann", "ann-laptop", "Ann's laptop");
    let laptop = b.build().await?;
    let (b, phone_link) = open("ann", "ann-phone", "Ann's phone");
    let phone = b.build().await?;
    let (b, _) = open("bob", "bob-desktop", "Bob's desktop");
    let bob = b.build().await?;
    for (name, c) in [("laptop", &laptop), ("phone", &phone), ("bob", &bob)] {
        trace(name, c);
    }

    step("1. Ann creates a shared folder on her laptop and writes two to-dos");
    let folder = laptop
        .create_folder("Groceries", FolderKind::app("todo")?)
        .await?;
    let todos = laptop
        .create_feed(&folder.id, "todos".parse()?, "To do")
        .await?;
    let milk = laptop
        .put(
            &folder.id,
            &todos,
            EntryDraft::new("Buy milk", json!({"done": false})),
        )
        .await?;
    laptop
        .put(
            &folder.id,
            &todos,
            EntryDraft::new("Buy eggs", json!({"done": false})),
        )
        .await?;
    laptop
        .invite(&folder.id, &"bob".parse()?, Role::Author)
        .await?;
    settle(&[&laptop, &phone, &bob]).await?;

    step("2. Bob accepts the invitation and adds a to-do; Ann's phone has everything");
    let invitations = bob.invitations().await?;
    println!("   bob sees {} invitation(s)", invitations.len());
    bob.accept(&folder.id).await?;
    settle(&[&bob, &laptop]).await?;
    bob.put(
        &folder.id,
        &todos,
        EntryDraft::new("Buy bread", json!({"done": false})),
    )
    .await?;
    settle(&[&bob, &laptop, &phone]).await?;
    show("phone", &phone, &folder.id, &todos).await?;
    match bob.delete(&folder.id, &todos, milk.entry_id()).await {
        Err(e) => println!("   bob may not delete Ann's entry: {e}"),
        Ok(()) => return Err("an Author deleted someone else's entry".into()),
    }

    step("3. The phone goes offline; both of Ann's devices edit \"Buy milk\"");
    set_online(&phone_link, false);
    phone
        .put_with_id(
            &folder.id,
            &todos,
            milk.entry_id().clone(),
            EntryDraft::new("Buy milk", json!({"done": true})),
        )
        .await?;
    println!("   phone (offline): marked milk done");
    laptop
        .put_with_id(
            &folder.id,
            &todos,
            milk.entry_id().clone(),
            EntryDraft::new("Buy oat milk", json!({"done": false})),
        )
        .await?;
    println!("   laptop: changed milk to oat milk");
    laptop.sync_now().await?;
    match phone.sync_now().await {
        Err(e) => println!("   phone cannot sync: {e}"),
        Ok(_) => return Err("an offline device synced".into()),
    }

    step("4. The phone reconnects: the edits conflict, and both versions are kept");
    let mut conflicts = laptop.subscribe(&folder.id, Some(&todos));
    set_online(&phone_link, true);
    settle(&[&phone, &laptop]).await?;
    let conflict_seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = conflicts.next().await {
            if matches!(
                e,
                Event::EntryChanged {
                    kind: ChangeKind::Conflict,
                    ..
                }
            ) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    println!("   laptop got a conflict event: {conflict_seen}");
    for (_, e) in laptop.conflicts(&folder.id).await? {
        println!("   winner:   {:?} {}", e.content.title, e.content.content);
        for c in &e.conflicts {
            println!("   conflict: {:?} {}", c.content.title, c.content.content);
        }
    }

    step("5. Ann resolves on the laptop: oat milk, done");
    let resolved = EntryDraft::new("Buy oat milk", json!({"done": true}));
    laptop
        .resolve(
            &folder.id,
            &todos,
            milk.entry_id(),
            Resolution::Write(resolved),
        )
        .await?;
    settle(&[&laptop, &phone, &bob]).await?;
    for (name, c) in [("laptop", &laptop), ("phone", &phone), ("bob", &bob)] {
        show(name, c, &folder.id, &todos).await?;
    }
    let lists = [
        laptop.query(&folder.id, &todos, Query::new()).await?,
        phone.query(&folder.id, &todos, Query::new()).await?,
        bob.query(&folder.id, &todos, Query::new()).await?,
    ];
    let converged = lists[0] == lists[1]
        && lists[1] == lists[2]
        && laptop.conflicts(&folder.id).await?.is_empty();
    println!("\n== All three replicas identical, no conflicts left: {converged}");
    println!(
        "   devices of ann: {:?}",
        laptop
            .devices()
            .await?
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>()
    );
    for n in laptop.folder_news(&folder.id).await?.iter().rev() {
        println!("   news: {}", n.summary);
    }
    if !converged || !conflict_seen {
        return Err("the tour did not converge".into());
    }
    Ok(())
}

/// Syncs each client in turn, twice, so that what one pushes the next pulls.
async fn settle(clients: &[&MeshClient]) -> Result<(), Error> {
    for _ in 0..2 {
        for c in clients {
            c.sync_now().await?;
        }
    }
    Ok(())
}

fn set_online(link: &LinkControl, on: bool) {
    link.set_online(on);
    println!("   phone link {}", if on { "up" } else { "down" });
}

fn trace(name: &'static str, client: &MeshClient) {
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                Event::EntryChanged {
                    feed,
                    id,
                    kind,
                    source: ChangeSource::Remote(_),
                } if !feed.is_system() => {
                    println!("   [{name}] {kind:?} {id} in {}", feed.name)
                }
                Event::Offline { remote } => println!("   [{name}] offline from {remote}"),
                Event::Online { remote } => println!("   [{name}] online with {remote}"),
                Event::Refused { id, reason, .. } => println!("   [{name}] refused {id}: {reason}"),
                _ => {}
            }
        }
    });
}

async fn show(
    name: &str,
    c: &MeshClient,
    folder: &mesh::core::id::FolderId,
    feed: &mesh::core::id::FeedName,
) -> Result<(), Error> {
    for e in c
        .query(
            folder,
            feed,
            Query::new().order_by(mesh::core::model::Field::Title, false),
        )
        .await?
    {
        println!(
            "   {name}: {:<13} {} by {} ({} conflicts)",
            format!("{:?}", e.content.title),
            e.content.content,
            e.content.author,
            e.conflicts.len()
        );
    }
    Ok(())
}

fn step(s: &str) {
    println!("\n== {s}");
}
