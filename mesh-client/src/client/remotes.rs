//! Remotes added to and removed from a running client: a peer found after the client started
//! (discovery, a device record), or one that went away.

use std::sync::Arc;

use mesh_core::id::RemoteId;

use crate::error::{ClientError, Result};
use crate::sync::engine;
use crate::transport::Transport;
use crate::MeshClient;

/// The most remotes a client syncs with at once (its hub and peers together): discovery may
/// find any number of peers, and each costs a task and a connection.
pub const MAX_REMOTES: usize = 64;

impl MeshClient {
    /// Starts syncing with one more remote, exactly as if it had been given to the builder
    /// ([`MeshClientBuilder::remote`](crate::MeshClientBuilder::remote)): a peer that
    /// appeared on the network, typically a [`PeerTransport`](crate::peer::PeerTransport) to
    /// an address from [`MeshClient::peer_addresses`]. Its cursors are kept under `name`, so
    /// a peer added again later carries on where it stopped. The remote appears in
    /// [`MeshClient::status`], its blobs become a source for downloads, and what a peer sends
    /// is judged by this device's rules (see [`Transport::relayer`]).
    ///
    /// Fails with [`ClientError::Conflict`] when a remote of that name is already syncing,
    /// [`ClientError::Config`] past [`MAX_REMOTES`], and [`ClientError::Closed`] on a closed
    /// client.
    pub fn add_remote(&self, name: RemoteId, transport: impl Transport) -> Result<()> {
        self.add_remote_arc(name, Arc::new(transport))
    }

    /// [`MeshClient::add_remote`] for a transport already shared.
    pub fn add_remote_arc(&self, name: RemoteId, transport: Arc<dyn Transport>) -> Result<()> {
        self.inner.shared.check_open()?;
        let mut engines = self.inner.engines.lock().unwrap_or_else(|p| p.into_inner());
        if engines.iter().any(|e| e.remote == name) {
            return Err(ClientError::Conflict(format!(
                "remote {name} is already syncing"
            )));
        }
        if engines.len() >= MAX_REMOTES {
            return Err(ClientError::Config(format!(
                "a client syncs with at most {MAX_REMOTES} remotes"
            )));
        }
        let (options, identity) = &self.inner.engine_setup;
        engines.push(engine::spawn(
            self.inner.shared.clone(),
            self.inner.events.clone(),
            name,
            transport,
            options.clone(),
            identity.clone(),
            self.inner.statuses.clone(),
        ));
        Ok(())
    }

    /// Stops syncing with `name` (a peer that left) and drops it from
    /// [`MeshClient::status`]; its cursors stay for when it comes back. Returns whether such a
    /// remote was syncing.
    pub fn remove_remote(&self, name: &RemoteId) -> bool {
        let removed = {
            let mut engines = self.inner.engines.lock().unwrap_or_else(|p| p.into_inner());
            let before = engines.len();
            // Dropping a handle stops its engine.
            engines.retain(|e| &e.remote != name);
            before != engines.len()
        };
        if removed {
            self.inner
                .statuses
                .send_modify(|all| all.retain(|s| &s.remote != name));
        }
        removed
    }

    /// The names of the remotes this client syncs with, in the order they were added.
    pub fn remote_names(&self) -> Vec<RemoteId> {
        self.inner
            .engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| e.remote.clone())
            .collect()
    }
}
