//! Acting on what discovery finds: each device announced nearby that proves, at the
//! handshake, to be who it announced becomes a remote of the client (`lan:<device>`), and
//! stops being one when it is no longer announced.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::id::{DeviceId, RemoteId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::peer::mdns::{DiscoveredPeer, MdnsAnnouncement, MdnsConfig, MdnsDiscovery};
use crate::peer::{PeerConfig, PeerError, PeerTransport};
use crate::sync::events::Event;
use crate::MeshClient;

/// The most remotes discovery adds to one client (a crowded or hostile network cannot take
/// every remote slot).
pub const MAX_NEARBY_REMOTES: usize = 16;

/// How often peers announced but not reached are tried again.
const RETRY: Duration = Duration::from_secs(30);

/// Discovery that the client acts on. Dropping it stops discovery and removes the remotes
/// it added.
#[derive(Debug)]
pub struct PeerDiscovery {
    mdns: Option<MdnsDiscovery>,
    task: JoinHandle<()>,
    client: MeshClient,
    added: watch::Receiver<Vec<RemoteId>>,
}

impl MeshClient {
    /// Finds peers on the local network by mDNS ([`MdnsConfig`]: the interfaces to use) and
    /// syncs with them: each device found that proves, at the handshake with `config`, to be
    /// the user and device it announced becomes the remote `lan:<device>` (reported as
    /// [`Event::PeerDiscovered`]); one no longer announced is removed ([`Event::PeerLost`]).
    /// With `listening` (a [`PeerListener`](crate::peer::PeerListener)'s address), this
    /// device is announced too. At most [`MAX_NEARBY_REMOTES`] remotes are added.
    pub async fn discover_peers(
        &self,
        mdns: MdnsConfig,
        listening: Option<SocketAddr>,
        config: PeerConfig,
    ) -> Result<PeerDiscovery, PeerError> {
        let announce = listening.map(|addr| MdnsAnnouncement {
            user: self.user().clone(),
            device: self.device().clone(),
            addr,
        });
        self.inner.shared.trust().adopt(&config.trust);
        let discovery = MdnsDiscovery::start(mdns, announce).await?;
        let (added_tx, added) = watch::channel(Vec::new());
        let task = tokio::spawn(follow(
            self.clone(),
            discovery.subscribe(),
            config,
            added_tx,
        ));
        Ok(PeerDiscovery {
            mdns: Some(discovery),
            task,
            client: self.clone(),
            added,
        })
    }
}

impl PeerDiscovery {
    /// The devices currently announced nearby (before any handshake).
    pub fn nearby(&self) -> Vec<DiscoveredPeer> {
        self.mdns.as_ref().map(|m| m.peers()).unwrap_or_default()
    }

    /// A receiver that sees every change of [`nearby`](Self::nearby).
    pub fn subscribe_nearby(&self) -> watch::Receiver<Vec<DiscoveredPeer>> {
        match &self.mdns {
            Some(m) => m.subscribe(),
            None => watch::channel(Vec::new()).1,
        }
    }

    /// The remotes discovery added and still syncs with.
    pub fn remotes(&self) -> Vec<RemoteId> {
        self.added.borrow().clone()
    }

    /// A receiver that sees every change of [`remotes`](Self::remotes).
    pub fn subscribe_remotes(&self) -> watch::Receiver<Vec<RemoteId>> {
        self.added.clone()
    }

    /// Asks the network again now.
    pub fn query_now(&self) {
        if let Some(m) = &self.mdns {
            m.query_now();
        }
    }

    /// Says goodbye on the network, stops, and removes the remotes discovery added.
    pub async fn close(mut self) {
        if let Some(m) = self.mdns.take() {
            m.close().await;
        }
        // Drop removes the remotes.
    }
}

impl Drop for PeerDiscovery {
    fn drop(&mut self) {
        self.task.abort();
        for name in self.added.borrow().iter() {
            self.client.remove_remote(name);
        }
    }
}

/// Follows the announced peers and keeps the client's nearby remotes in step with them.
async fn follow(
    client: MeshClient,
    mut peers: watch::Receiver<Vec<DiscoveredPeer>>,
    config: PeerConfig,
    added: watch::Sender<Vec<RemoteId>>,
) {
    let mut active: HashMap<DeviceId, (DiscoveredPeer, RemoteId)> = HashMap::new();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now: Vec<DiscoveredPeer> = peers.borrow_and_update().clone();
        let gone: Vec<DeviceId> = active
            .iter()
            .filter(|(_, (p, _))| !now.contains(p))
            .map(|(d, _)| d.clone())
            .collect();
        for device in gone {
            if let Some((peer, name)) = active.remove(&device) {
                client.remove_remote(&name);
                added.send_modify(|v| v.retain(|n| n != &name));
                let _ = client.inner.events.send(Event::PeerLost {
                    user: peer.user,
                    device: peer.device,
                    addr: peer.addr,
                });
            }
        }
        // Every new candidate is tried at once: a host announcing addresses that never
        // answer delays no one beyond one handshake timeout.
        let candidates = now.into_iter().filter(|p| !active.contains_key(&p.device));
        let tries = candidates.filter_map(|peer| {
            let name = format!("lan:{}", peer.device).parse::<RemoteId>().ok()?;
            let transport = PeerTransport::new(peer.addr, config.clone()).ok()?;
            Some(async move {
                // The handshake has its own timeout; only a peer that proves the announced
                // identity is synced with (an address is a hint, not a proof).
                match transport.connect().await {
                    Ok(id) if id.user == peer.user && id.device == peer.device => {
                        Some((peer, name, transport))
                    }
                    Ok(id) => {
                        tracing::debug!(announced = %peer.device, proved = %id.device,
                            "a nearby peer proved another identity than it announced");
                        None
                    }
                    Err(e) => {
                        tracing::debug!(device = %peer.device, addr = %peer.addr, error = %e,
                            "a nearby peer could not be reached");
                        None
                    }
                }
            })
        });
        for (peer, name, transport) in futures::future::join_all(tries).await.into_iter().flatten()
        {
            if active.contains_key(&peer.device) || active.len() >= MAX_NEARBY_REMOTES {
                continue;
            }
            if client.add_remote(name.clone(), transport).is_ok() {
                let _ = client.inner.events.send(Event::PeerDiscovered {
                    user: peer.user.clone(),
                    device: peer.device.clone(),
                    addr: peer.addr,
                });
                // Recorded at once (no await in between), so that dropping the discovery
                // removes every remote it added.
                added.send_modify(|v| {
                    v.push(name.clone());
                    v.sort();
                });
                active.insert(peer.device.clone(), (peer, name));
            }
        }
        // A peer whose handshake failed is tried again on the next change or retry tick.
        tokio::select! {
            changed = peers.changed() => if changed.is_err() { return },
            _ = retry.tick() => {}
        }
    }
}
