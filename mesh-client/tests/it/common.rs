//! Helpers shared by the test modules.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use mesh_client::transport::{
    Identity, InProcessHub, InProcessTransport, Notification, Transport, TransportError,
};
use mesh_client::{MeshClient, MeshClientBuilder};
use mesh_core::blob::ChunkHash;
use mesh_core::id::{DeviceId, FolderId};
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_core::trust::{Enrollment, PublicKey};

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

/// A transport to an in-process hub that passes everything through, recording the blob
/// objects it is asked for, leaving chosen ones out of its answers (as a remote that does
/// not hold them would) and letting a test change each `send` answer.
pub struct HubProxy {
    pub inner: InProcessTransport,
    /// Blob objects fetched through it.
    pub fetched: Arc<AtomicUsize>,
    /// Every blob object asked for, in order.
    pub asked: Arc<Mutex<Vec<ChunkHash>>>,
    /// Objects left out of every `get_objects` answer.
    pub withheld: Arc<Mutex<HashSet<ChunkHash>>>,
    /// Applied to every answer to `send`.
    pub on_answer: fn(&mut Response),
}

impl HubProxy {
    /// `user`'s transport to `hub`, through the proxy.
    pub fn new(hub: &InProcessHub, user: &str) -> HubProxy {
        HubProxy {
            inner: hub.connect(user.parse().unwrap()),
            fetched: Default::default(),
            asked: Default::default(),
            withheld: Default::default(),
            on_answer: |_| {},
        }
    }
}

#[async_trait::async_trait]
impl Transport for HubProxy {
    async fn send(&self, r: Request) -> Result<Response, TransportError> {
        let mut answer = self.inner.send(r).await?;
        (self.on_answer)(&mut answer);
        Ok(answer)
    }
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        self.inner.watch().await
    }
    fn describe(&self) -> String {
        "hub proxy".into()
    }
    async fn enroll(
        &self,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Enrollment, TransportError> {
        self.inner.enroll(device, key).await
    }
    async fn whoami(&self) -> Result<Option<Identity>, TransportError> {
        self.inner.whoami().await
    }
    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        self.inner.missing_objects(folder, hashes).await
    }
    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        self.inner.put_objects(folder, objects).await
    }
    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.fetched.fetch_add(hashes.len(), Ordering::Relaxed);
        self.asked.lock().unwrap().extend_from_slice(hashes);
        let mut got = self.inner.get_objects(folder, hashes).await?;
        let withheld = self.withheld.lock().unwrap().clone();
        got.retain(|(h, _)| !withheld.contains(h));
        Ok(got)
    }
}
