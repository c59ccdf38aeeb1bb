//! Two devices syncing through a real hub over HTTP.
//!
//! ```text
//! cargo run --example hub_sync
//! ```
//!
//! starts a hub in this process on a free 127.0.0.1 port (data in a temporary directory). To
//! use a hub you run yourself instead:
//!
//! ```text
//! cargo run -p mesh-hub -- --data ./hub-data user add ann
//! cargo run -p mesh-hub -- --data ./hub-data device add ann ann-laptop    # prints token A
//! cargo run -p mesh-hub -- --data ./hub-data device add ann ann-phone     # prints token B
//! cargo run -p mesh-hub -- --listen 127.0.0.1:7300 --data ./hub-data &
//! MESH_HUB=http://127.0.0.1:7300 MESH_TOKEN_A=… MESH_TOKEN_B=… cargo run --example hub_sync
//! ```
//!
//! Ann's laptop creates a folder and writes to-dos; her phone receives them through the hub,
//! ticks one off, and the laptop hears of it by a server-sent notification — no polling.

use std::time::Duration;

use futures::StreamExt;
use mesh::client::transport::HttpTransport;
use mesh::client::{ChangeSource, Event, MeshClient};
use mesh::core::model::{EntryDraft, FolderKind, Query};
use mesh::hub::Hub;
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let _dir = tempfile::tempdir()?;
    let (url, token_a, token_b) = match std::env::var("MESH_HUB") {
        Ok(url) => (
            url,
            std::env::var("MESH_TOKEN_A")?,
            std::env::var("MESH_TOKEN_B")?,
        ),
        Err(_) => {
            // A hub of our own, as `mesh-hub --listen 127.0.0.1:0 --data DIR` would run it.
            let hub = Hub::builder().data_dir(_dir.path()).build()?;
            let ann = "ann".parse()?;
            hub.accounts().add_user(&ann)?;
            let a = hub.accounts().add_device(
                &ann,
                &"ann-laptop".parse()?,
                "Ann's laptop",
                "laptop",
            )?;
            let b =
                hub.accounts()
                    .add_device(&ann, &"ann-phone".parse()?, "Ann's phone", "phone")?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            tokio::spawn(hub.serve(listener, std::future::pending()));
            (url, a, b)
        }
    };
    println!("hub at {url}");

    let open = |device: &str, token: &str| -> Result<_, Error> {
        Ok(MeshClient::builder()
            .user("ann".parse()?)
            .device(device.parse()?)
            .remote("hub".parse()?, HttpTransport::new(&url, token)?))
    };
    let laptop = open("ann-laptop", &token_a)?.build().await?;
    let phone = open("ann-phone", &token_b)?.build().await?;

    let folder = laptop
        .create_folder("Groceries", FolderKind::app("todo")?)
        .await?;
    let todos = laptop
        .create_feed(&folder.id, "todos".parse()?, "To do")
        .await?;
    for title in ["Buy milk", "Buy eggs", "Call the plumber"] {
        laptop
            .put(
                &folder.id,
                &todos,
                EntryDraft::new(title, json!({"done": false})),
            )
            .await?;
    }
    laptop.sync_now().await?;
    phone.sync_now().await?;
    let on_phone = phone.query(&folder.id, &todos, Query::new()).await?;
    println!("the phone has {} to-dos:", on_phone.len());
    for e in &on_phone {
        println!("  - {}", e.content.title);
    }

    // The phone ticks one off; the laptop learns of it through the hub's notification stream.
    let mut laptop_events = laptop.subscribe(&folder.id, Some(&todos));
    let milk = on_phone
        .iter()
        .find(|e| e.content.title == "Buy milk")
        .ok_or("milk is missing")?;
    phone
        .put_with_id(
            &folder.id,
            &todos,
            milk.sync.id.clone(),
            EntryDraft::new("Buy milk", json!({"done": true})),
        )
        .await?;
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = laptop_events.next().await {
            if let Event::EntryChanged {
                id,
                source: ChangeSource::Remote(_),
                ..
            } = ev
            {
                if id == milk.sync.id {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let milk_now = laptop
        .get(&folder.id, &todos, &milk.sync.id)
        .await?
        .ok_or("milk is missing")?;
    println!(
        "the laptop {} the phone's edit: {} is now {}",
        if heard { "was notified of" } else { "synced" },
        milk_now.content.title,
        milk_now.content.content
    );
    laptop.close();
    phone.close();
    Ok(())
}
