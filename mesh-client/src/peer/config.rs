//! What a device needs to meet peers: its credentials, whom it trusts, and the limits it
//! holds every peer to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::id::DeviceId;
use mesh_core::time::Timestamp;
use mesh_core::trust::{DeviceCertificate, MemoryKeyring, PublicKey, Revocation, SecretKey};

use crate::transport::serve::{lock_ring, SharedKeyring};

/// This device's credentials towards peers: the certificate the mesh authority issued for its
/// key, and that key (which never leaves the device: only signatures are sent).
#[derive(Clone)]
pub struct PeerCredentials {
    /// The device's certificate.
    pub certificate: DeviceCertificate,
    /// The device's signing key: the one the certificate certifies.
    pub key: SecretKey,
}

impl std::fmt::Debug for PeerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCredentials")
            .field("user", &self.certificate.user)
            .field("device", &self.certificate.device)
            .finish_non_exhaustive()
    }
}

/// Whom a device trusts: the mesh authority's key it pinned (the only root) and what it knows
/// of the mesh's devices (certificates, revocations). Cheap to clone: clones share one
/// keyring, so a revocation learned later applies to the next handshake and to the versions
/// peers push from then on. Peers' certificates are added to it as they authenticate.
#[derive(Clone)]
pub struct PeerTrust {
    ring: SharedKeyring,
}

impl std::fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTrust")
            .field("authority", &self.authority())
            .finish_non_exhaustive()
    }
}

impl PeerTrust {
    /// Trusts the authority `authority` (the key pinned at enrollment) and knows no device yet.
    pub fn new(authority: PublicKey) -> Self {
        Self::from_keyring(MemoryKeyring::new(authority))
    }

    /// Trusts `keyring`'s authority and starts from what it knows.
    pub fn from_keyring(keyring: MemoryKeyring) -> Self {
        PeerTrust {
            ring: Arc::new(Mutex::new(keyring)),
        }
    }

    /// The pinned authority key.
    pub fn authority(&self) -> PublicKey {
        *lock_ring(&self.ring).authority()
    }

    /// Records a certificate (checked against the authority first).
    pub fn add_certificate(&self, certificate: DeviceCertificate) -> mesh_core::Result<()> {
        lock_ring(&self.ring).add(certificate)
    }

    /// Records that `device` is revoked from `at` on: its handshakes are refused, and so are
    /// the versions it signed later.
    pub fn revoke(&self, device: &DeviceId, at: Timestamp) {
        lock_ring(&self.ring).revoke(device, at);
    }

    /// Takes an authority's signed revocation statement (see [`Revocation`]): checked against
    /// the pinned authority, then applied like [`PeerTrust::revoke`] and relayed to the peers
    /// this device serves. `Ok(true)` when it was news. A client learns the statements its
    /// hub and peers send by itself; this is for statements that reach the application
    /// another way.
    pub fn learn(&self, statement: Revocation) -> mesh_core::Result<bool> {
        lock_ring(&self.ring).learn(statement)
    }

    /// The signed revocation statements this trust holds (those it relays).
    pub fn revocations(&self) -> Vec<Revocation> {
        lock_ring(&self.ring).revocations()
    }

    /// Whether `device` is known to be revoked at `now`.
    pub fn is_revoked(&self, device: &DeviceId, now: Timestamp) -> bool {
        lock_ring(&self.ring)
            .revoked_at(device)
            .is_some_and(|at| at <= now)
    }

    pub(crate) fn from_shared(ring: SharedKeyring) -> Self {
        PeerTrust { ring }
    }

    pub(crate) fn keyring(&self) -> &SharedKeyring {
        &self.ring
    }
}

/// How a device meets peers: its credentials, its trust, and the limits it applies to every
/// peer (none of which a peer chooses).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This device's certificate and key.
    pub credentials: PeerCredentials,
    /// The pinned authority and the known devices.
    pub trust: PeerTrust,
    /// How long the TLS handshake and the certificate exchange together may take.
    pub handshake_timeout: Duration,
    /// How long one request may wait for its answer (and one frame for its last byte).
    pub request_timeout: Duration,
    /// How long a listener keeps a connection that sends no request open.
    pub idle_timeout: Duration,
    /// How many peer connections a listener serves at once (more are closed at once).
    pub max_connections: usize,
    /// How far a peer's clock may be behind ours when its certificate's validity starts.
    pub clock_skew: Duration,
}

impl PeerConfig {
    /// A configuration with the default limits: a 10 s handshake, 60 s requests, 5 min idle
    /// connections, 64 connections, 5 min of clock skew.
    pub fn new(credentials: PeerCredentials, trust: PeerTrust) -> Self {
        PeerConfig {
            credentials,
            trust,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_connections: 64,
            clock_skew: Duration::from_secs(300),
        }
    }
}

impl crate::MeshClient {
    /// This device's peer configuration from its enrollment with `remote` (a hub): the
    /// certificate that authority issued, the device's key, and trust in that authority
    /// alone: the client's one trust for it, which holds every revocation the client learned
    /// from its hubs and peers. `Ok(None)` when the store holds no enrollment with `remote` (a memory store
    /// keeps none; a SQLite store has one once the device synced with that hub).
    pub async fn peer_config(
        &self,
        remote: &mesh_core::id::RemoteId,
    ) -> crate::error::Result<Option<PeerConfig>> {
        use crate::store::DeviceStore as _;
        let remote = remote.clone();
        let found = self
            .inner
            .shared
            .run(move |r| {
                let Some(enrollment) = r.store().enrollment(&remote)? else {
                    return Ok(None);
                };
                // Only stores that keep enrollments get here: their key is the saved one.
                let key = r.store_mut().device_key()?;
                if enrollment.certificate.key != key.public() {
                    return Err(crate::error::ClientError::Config(format!(
                        "the enrollment with {remote} certifies another key than this device's"
                    )));
                }
                Ok(Some((enrollment, key)))
            })
            .await??;
        Ok(found.map(|(enrollment, key)| {
            // One trust per authority for the whole client: what any remote teaches it (a
            // revocation) holds on every peer connection.
            let trust = self.inner.shared.trust().trust_for(enrollment.authority);
            let credentials = PeerCredentials {
                certificate: enrollment.certificate,
                key,
            };
            PeerConfig::new(credentials, trust)
        }))
    }
}
