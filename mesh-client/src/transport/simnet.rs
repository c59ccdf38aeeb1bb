//! A deterministic simulated network for tests.

use mesh_core::id::DeviceId;
use mesh_core::trust::{Enrollment, PublicKey};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;
use mesh_core::sync::{Request, Response};

use crate::transport::{NextPage, Notification, Transport, TransportError};

/// Fault rates and delays of a [`SimNetwork`]. Rates are probabilities from 0 to 1.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SimConfig {
    /// Seed of the network's random choices: the same seed and the same calls give the same
    /// faults.
    pub seed: u64,
    /// A request is lost before reaching the remote (the caller sees a timeout).
    pub drop_request: f64,
    /// A response is lost after the remote applied the request (the caller sees a timeout).
    pub drop_response: f64,
    /// A request is delivered twice.
    pub duplicate: f64,
    /// An old request (from the last few) is delivered again before this one: a replay.
    pub replay: f64,
    /// Longest delay added to a call (uniform from zero). Uses tokio's clock, so tests with a
    /// paused clock run instantly.
    pub max_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            drop_request: 0.0,
            drop_response: 0.0,
            duplicate: 0.0,
            replay: 0.0,
            max_delay: Duration::ZERO,
        }
    }
}

impl SimConfig {
    /// Seed of the network's random choices: the same seed and the same calls give the same
    /// faults.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// A request is lost before reaching the remote (the caller sees a timeout).
    #[must_use]
    pub fn with_drop_request(mut self, drop_request: f64) -> Self {
        self.drop_request = drop_request;
        self
    }

    /// A response is lost after the remote applied the request (the caller sees a timeout).
    #[must_use]
    pub fn with_drop_response(mut self, drop_response: f64) -> Self {
        self.drop_response = drop_response;
        self
    }

    /// A request is delivered twice.
    #[must_use]
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// An old request (from the last few) is delivered again before this one: a replay.
    #[must_use]
    pub fn with_replay(mut self, replay: f64) -> Self {
        self.replay = replay;
        self
    }

    /// Longest delay added to a call (uniform from zero). Uses tokio's clock, so tests with a
    /// paused clock run instantly.
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }
}

struct NetState {
    rng: fastrand::Rng,
    history: VecDeque<Request>,
}

/// A simulated network shared by several links: seeded drops, duplicates, replays, delays and
/// partitions (see [`LinkControl`]). Applications can use it in their own tests.
///
/// ```
/// use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork};
/// let hub = InProcessHub::new();
/// let net = SimNetwork::new(SimConfig::default().with_seed(7).with_drop_request(0.1));
/// let (transport, link) = net.wrap(hub.connect("ann".parse().unwrap()));
/// link.set_online(false); // a partition: every call fails as offline
/// # let _ = transport;
/// ```
#[derive(Clone)]
pub struct SimNetwork {
    config: Arc<SimConfig>,
    state: Arc<Mutex<NetState>>,
}

impl SimNetwork {
    /// A network with the given faults.
    pub fn new(config: SimConfig) -> Self {
        SimNetwork {
            state: Arc::new(Mutex::new(NetState {
                rng: fastrand::Rng::with_seed(config.seed),
                history: VecDeque::new(),
            })),
            config: Arc::new(config),
        }
    }

    /// Routes `inner` through this network; the returned control cuts and restores the link.
    pub fn wrap<T: Transport>(&self, inner: T) -> (SimTransport, LinkControl) {
        let link = LinkControl(Arc::new(AtomicBool::new(true)));
        (
            SimTransport {
                inner: Arc::new(inner),
                net: self.clone(),
                link: link.clone(),
            },
            link,
        )
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.lock().rng.f64() < p
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delay(&self) -> Duration {
        let max = self.config.max_delay.as_micros() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.lock().rng.u64(0..=max))
    }
}

/// Cuts and restores one simulated link.
#[derive(Clone, Debug)]
pub struct LinkControl(Arc<AtomicBool>);

impl LinkControl {
    /// Connects (`true`) or partitions (`false`) the link.
    pub fn set_online(&self, online: bool) {
        self.0.store(online, Ordering::SeqCst);
    }

    /// Whether the link is up.
    pub fn is_online(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A transport routed through a [`SimNetwork`].
#[derive(Clone)]
pub struct SimTransport {
    inner: Arc<dyn Transport>,
    net: SimNetwork,
    link: LinkControl,
}

impl SimTransport {
    fn check_link(&self) -> Result<(), TransportError> {
        if self.link.is_online() {
            Ok(())
        } else {
            Err(TransportError::Offline("simulated partition".into()))
        }
    }
}

impl SimTransport {
    /// A request through the simulated network; a pull's `next` goes to the wrapped transport.
    async fn carry(
        &self,
        request: Request,
        next: Option<&NextPage>,
    ) -> Result<Response, TransportError> {
        self.check_link()?;
        let d = self.net.delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        self.check_link()?;
        if self.net.roll(self.net.config.replay) {
            let old = {
                let mut st = self.net.lock();
                let n = st.history.len();
                if n > 0 {
                    let i = st.rng.usize(0..n);
                    Some(st.history[i].clone())
                } else {
                    None
                }
            };
            if let Some(old) = old {
                // The replayed request's answer goes nowhere; its errors too.
                let _ = self.inner.send(old).await;
            }
        }
        if self.net.roll(self.net.config.drop_request) {
            return Err(TransportError::Timeout);
        }
        {
            let mut st = self.net.lock();
            st.history.push_back(request.clone());
            if st.history.len() > 16 {
                st.history.pop_front();
            }
        }
        if self.net.roll(self.net.config.duplicate) {
            let _ = self.inner.send(request.clone()).await;
        }
        let response = match next {
            Some(next) => self.inner.send_pull(request, next).await?,
            None => self.inner.send(request).await?,
        };
        if self.net.roll(self.net.config.drop_response) || !self.link.is_online() {
            return Err(TransportError::Timeout);
        }
        Ok(response)
    }
}

#[async_trait]
impl Transport for SimTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.carry(request, None).await
    }

    async fn send_pull(
        &self,
        request: Request,
        next: &NextPage,
    ) -> Result<Response, TransportError> {
        self.carry(request, Some(next)).await
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        self.check_link()?;
        let link = self.link.clone();
        let inner = self.inner.watch().await?;
        // Notifications stop while the link is down (the stream ends; the engine reconnects).
        Ok(inner
            .take_while(move |_| futures::future::ready(link.is_online()))
            .boxed())
    }

    fn describe(&self) -> String {
        format!("{} (simulated network)", self.inner.describe())
    }

    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }

    async fn relayer(&self) -> Result<Option<crate::transport::Relayer>, TransportError> {
        self.inner.relayer().await
    }

    async fn enroll(
        &self,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Enrollment, TransportError> {
        self.before_call().await?;
        let out = self.inner.enroll(device, key).await?;
        self.after_call()?;
        Ok(out)
    }

    async fn whoami(&self) -> Result<Option<crate::transport::Identity>, TransportError> {
        self.before_call().await?;
        let out = self.inner.whoami().await?;
        self.after_call()?;
        Ok(out)
    }

    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        self.before_call().await?;
        let out = self.inner.missing_objects(folder, hashes).await?;
        self.after_call()?;
        Ok(out)
    }

    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        self.before_call().await?;
        self.inner.put_objects(folder, objects).await?;
        self.after_call()
    }

    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.before_call().await?;
        let out = self.inner.get_objects(folder, hashes).await?;
        self.after_call()?;
        Ok(out)
    }

    fn relays_blobs(&self) -> bool {
        self.inner.relays_blobs()
    }

    async fn get_objects_waiting(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
        wait: std::time::Duration,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.before_call().await?;
        let out = self.inner.get_objects_waiting(folder, hashes, wait).await?;
        self.after_call()?;
        Ok(out)
    }
}

impl SimTransport {
    /// The faults of a blob call before it reaches the remote: a partition, a delay, a lost
    /// request.
    async fn before_call(&self) -> Result<(), TransportError> {
        self.check_link()?;
        let d = self.net.delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        self.check_link()?;
        if self.net.roll(self.net.config.drop_request) {
            return Err(TransportError::Timeout);
        }
        Ok(())
    }

    /// The faults after the remote answered: a lost response, a link gone down meanwhile.
    fn after_call(&self) -> Result<(), TransportError> {
        if self.net.roll(self.net.config.drop_response) || !self.link.is_online() {
            return Err(TransportError::Timeout);
        }
        Ok(())
    }
}
