//! Helpers shared by the test modules.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use mesh_client::transport::Transport;
use mesh_client::{MeshClient, MeshClientBuilder};
use mesh_core::time::Timestamp;

/// A clock that ticks one second per reading, from a fixed start: deterministic `when`s.
pub fn ticking_clock() -> impl Fn() -> Timestamp + Send + Sync + 'static {
    let t = Arc::new(AtomicI64::new(1_800_000_000));
    move || Timestamp::from_unix(t.fetch_add(1, Ordering::SeqCst)).unwrap()
}

pub fn builder(user: &str, device: &str) -> MeshClientBuilder {
    MeshClient::builder()
        .user(user.parse().unwrap())
        .device(device.parse().unwrap())
        .clock(ticking_clock())
}

pub async fn client(user: &str, device: &str, remote: impl Transport) -> MeshClient {
    builder(user, device)
        .remote("hub".parse().unwrap(), remote)
        .build()
        .await
        .unwrap()
}

/// Syncs every client in turn until two whole rounds in a row move nothing. (One quiet round
/// is not enough: a client's background engine may have pushed a change just before its
/// `sync_now`, after the clients before it in the round had already synced.)
pub async fn settle(clients: &[&MeshClient]) {
    let mut quiet = 0;
    for _ in 0..30 {
        let mut moved = 0;
        for c in clients {
            for (_, r) in c.sync_now().await.unwrap() {
                moved += r.sent + r.received;
            }
        }
        quiet = if moved == 0 { quiet + 1 } else { 0 };
        if quiet == 2 {
            return;
        }
    }
    panic!("clients did not settle");
}
