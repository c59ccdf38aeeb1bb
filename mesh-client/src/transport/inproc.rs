//! The in-process transport: a hub replica (or another client) in the same process.

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::{Arc, Mutex};

use mesh_core::blob::ChunkHash;
use mesh_core::id::{DeviceId, FolderId, ReplicaId, UserId};
use mesh_core::replica::Replica;
use mesh_core::store::Store as _;
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_core::trust::{DeviceCertificate, Enrollment, MemoryKeyring, PublicKey, SecretKey};
use mesh_core::CoreError;
use mesh_core::Result as CoreResult;

use crate::error::Result;
use crate::shared::SharedReplica;
use crate::store::{fresh_key, BlobStore, ClientStore, StoreConfig};
use crate::transport::serve::{lock_ring, ReplicaServer, SharedKeyring};
use crate::transport::{Notification, Transport, TransportError};

/// A hub in the same process: a replica that serves any number of clients through
/// [`InProcessTransport`]s, enforcing the folders' member roles like the HTTP hub does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use mesh_client::transport::{InProcessHub, Transport};
/// let hub = InProcessHub::new();
/// let transport = hub.connect("ann".parse().unwrap());
/// assert_eq!(transport.describe(), "in-process hub as ann");
/// # }
/// ```
#[derive(Clone)]
pub struct InProcessHub {
    shared: SharedReplica,
    authority: Arc<Authority>,
}

/// How long the certificates an in-process hub issues stay valid.
const CERTIFICATE_VALIDITY_SECS: i64 = 365 * 86_400;

/// An in-process hub's authority: its key, and the devices it certified or revoked.
pub(crate) struct Authority {
    key: SecretKey,
    device: DeviceId,
    keyring: SharedKeyring,
}

impl Authority {
    fn new(device: DeviceId) -> Result<Self> {
        let key = fresh_key()?;
        let mut keyring = MemoryKeyring::new(key.public());
        keyring.set_authority_device(device.clone());
        Ok(Authority {
            key,
            device,
            keyring: Arc::new(Mutex::new(keyring)),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, MemoryKeyring> {
        lock_ring(&self.keyring)
    }

    /// Certifies `device`'s `key` for `user` (again, to renew it); a device keeps the key it
    /// first enrolled, and a revoked device is never certified again.
    fn enroll(&self, user: &UserId, device: &DeviceId, key: &PublicKey) -> CoreResult<Enrollment> {
        let mut ring = self.ring();
        if let Some(known) = ring.device(device) {
            if known.revoked_at.is_some() {
                return Err(CoreError::Revoked {
                    device: device.to_string(),
                });
            }
            if &known.certificate.key != key || &known.certificate.user != user {
                return Err(CoreError::AlreadyExists {
                    kind: "device certificate",
                    id: device.to_string(),
                });
            }
        }
        let now = system_now();
        let certificate = DeviceCertificate::issue(
            &self.key,
            user.clone(),
            device.clone(),
            *key,
            now.plus_secs(-300),
            now.plus_secs(CERTIFICATE_VALIDITY_SECS),
        );
        ring.add(certificate.clone())?;
        Ok(Enrollment {
            certificate,
            authority: self.key.public(),
            authority_device: self.device.clone(),
        })
    }
}

fn system_now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_unix(secs).unwrap_or(Timestamp::EPOCH)
}

impl Default for InProcessHub {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessHub {
    /// A hub with an in-memory store and a fresh replica id.
    pub fn new() -> Self {
        let id = format!("hub-{}", uuid::Uuid::new_v4().simple());
        // A fresh uuid is always a valid id.
        let id: ReplicaId = id.parse().unwrap_or_else(|_| unreachable!());
        let store = ClientStore::Memory(mesh_core::store::MemoryStore::new(id));
        Self::from_store(store, BlobStore::memory())
    }

    /// A hub over the given store (for a hub whose data survives restarts).
    pub fn open(config: &StoreConfig) -> Result<Self> {
        let id = format!("hub-{}", uuid::Uuid::new_v4().simple());
        let id: ReplicaId = id.parse().unwrap_or_else(|_| unreachable!());
        Ok(Self::from_store(
            ClientStore::open(config, id)?,
            BlobStore::for_config(config)?,
        ))
    }

    fn from_store(store: ClientStore, blobs: BlobStore) -> Self {
        // A replica id is a valid device id: both are plain ids.
        let endpoint: DeviceId = store
            .replica_id()
            .as_str()
            .parse()
            .unwrap_or_else(|_| unreachable!("replica ids are valid device ids"));
        // Without a random source there is no key to sign with: nothing works then.
        let authority = Authority::new(endpoint).expect("the operating system's random source");
        InProcessHub {
            shared: SharedReplica::new(Replica::new(store), blobs, Vec::new()),
            authority: Arc::new(authority),
        }
    }

    /// The public key of this hub's authority (devices pin it when they enroll).
    pub fn authority_key(&self) -> PublicKey {
        self.authority.key.public()
    }

    /// Certifies a device's key for `user`, as the transport's `enroll` does.
    pub fn enroll(&self, user: &UserId, device: &DeviceId, key: &PublicKey) -> Result<Enrollment> {
        Ok(self.authority.enroll(user, device, key)?)
    }

    /// The certificate this hub issued to `device`, if any.
    pub fn certificate(&self, device: &DeviceId) -> Option<DeviceCertificate> {
        self.authority
            .ring()
            .device(device)
            .map(|d| d.certificate.clone())
    }

    /// Revokes a device from now on: versions it signs that the hub does not hold yet are
    /// refused.
    pub fn revoke_device(&self, device: &DeviceId) {
        let now = system_now();
        let mut ring = self.authority.ring();
        match ring.device(device).map(|d| d.certificate.user.clone()) {
            // A certified device gets a signed statement, which every `feeds` answer passes
            // on to the devices that share a folder with its user.
            Some(user) => ring.revoke_as_authority(&self.authority.key, user, device, now),
            // One never certified signed nothing and cannot meet a peer.
            None => ring.revoke(device, now),
        }
    }

    /// Records that `device` belongs to the mesh: until it enrolls, its versions are refused
    /// (instead of counting as the pusher's foreign versions).
    pub fn register_device(&self, device: DeviceId) {
        self.authority.ring().register(device);
    }

    /// Records that `user` has an account here, as a mesh-hub's administrator does. From the
    /// first call on, the hub knows its accounts and refuses invitations of anyone else
    /// (`not_found`: the inviting client hears [`Event::Refused`](crate::Event::Refused) and
    /// withdraws the invitation); before it, anyone may be invited.
    pub fn add_user(&self, user: UserId) {
        self.authority.ring().add_user(user);
    }

    /// The hub's blob store (for tests and inspection).
    pub fn blobs(&self) -> &BlobStore {
        self.shared.blobs()
    }

    /// A transport through which `user` syncs with this hub.
    pub fn connect(&self, user: UserId) -> InProcessTransport {
        InProcessTransport {
            server: ReplicaServer::new(self.shared.clone(), Some(self.authority.keyring.clone())),
            label: format!("in-process hub as {user}"),
            user,
            authority: Some(self.authority.clone()),
        }
    }

    /// Reads the hub's replica (for tests and inspection).
    pub fn inspect<R>(&self, f: impl FnOnce(&Replica<ClientStore>) -> R) -> R {
        self.shared.run_now(|r| f(r))
    }
}

/// A transport to an [`InProcessHub`] (or to a client served with `MeshClient::serve`) on
/// behalf of one user.
#[derive(Clone)]
pub struct InProcessTransport {
    server: ReplicaServer,
    user: UserId,
    label: String,
    /// The hub's authority; `None` for a client served directly, which checks no signatures
    /// (every version counts as the pushing user's).
    authority: Option<Arc<Authority>>,
}

impl InProcessTransport {
    pub(crate) fn new(shared: SharedReplica, user: UserId, label: String) -> Self {
        InProcessTransport {
            server: ReplicaServer::new(shared, None),
            user,
            label,
            authority: None,
        }
    }
}

#[async_trait]
impl Transport for InProcessTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.server.sync(&self.user, request).await
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        Ok(self.server.watch(&self.user))
    }

    async fn whoami(&self) -> Result<Option<crate::transport::Identity>, TransportError> {
        Ok(Some(crate::transport::Identity {
            user: self.user.clone(),
            device: None,
        }))
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn enroll(
        &self,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Enrollment, TransportError> {
        match &self.authority {
            Some(a) => a
                .enroll(&self.user, device, key)
                .map_err(TransportError::Remote),
            None => Err(TransportError::Unsupported("enrollment".into())),
        }
    }

    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        self.server
            .missing_objects(&self.user, folder, hashes)
            .await
    }

    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        self.server.put_objects(&self.user, folder, objects).await
    }

    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.server.get_objects(&self.user, folder, hashes).await
    }
}
