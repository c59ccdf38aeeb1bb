//! Accounts: users, their devices, and the devices' bearer tokens, over an
//! [`AccountStore`] (SQLite by default, PostgreSQL for hubs that share a database).
//!
//! A token is `mesh_` followed by 64 hex digits (244 random bits from two v4 UUIDs). Only its
//! SHA-256 is stored, so a copy of the database does not hand out access. A token is bound to
//! one user and one device; revoking the device deletes its tokens, so the next request with
//! any of them is refused (and the hub closes the device's open notification streams).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mesh_core::id::{DeviceId, UserId};
use mesh_core::time::Timestamp;
use mesh_core::trust::{DeviceCertificate, Enrollment, MemoryKeyring, PublicKey, SecretKey};
use mesh_store::accounts::{AccountStore, AddDevice, SqliteAccounts};
use mesh_store::Durability;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::HubError;

/// Who a request acts for: the user and the device its token was minted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
}

/// A registered device, as the accounts database knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    /// The device id (its FeedSync endpoint).
    pub id: DeviceId,
    /// Its owner.
    pub owner: UserId,
    /// A readable name.
    pub name: String,
    /// What kind of device.
    pub kind: String,
    /// When it was registered (seconds since the epoch).
    pub created_at: i64,
    /// When it was last seen, as last recorded (the hub records it every few seconds).
    pub last_seen: Option<i64>,
}

/// The accounts database. Cheap to share behind an `Arc`; calls are short and synchronous.
///
/// It also holds the mesh's authority: the key that signs device certificates (made on first
/// open and kept in the database) and a keyring of every registered device, its certificate
/// and its revocation, which the guard checks signatures against.
pub struct Accounts {
    pub(crate) store: Box<dyn AccountStore>,
    authority: SecretKey,
    keyring: RwLock<Arc<MemoryKeyring>>,
    /// The store's version when the keyring was last loaded: another process (the admin
    /// CLI, another hub process) registering or revoking a device changes it, and the keyring
    /// is read again.
    loaded_at: Mutex<i64>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts")
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The stored form of a token (and of an enrollment code): its SHA-256 in hex.
pub(crate) fn hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> String {
    format!(
        "mesh_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Accounts {
    /// Opens (creating if needed) the accounts database at `path`, with full durability.
    pub fn open(path: &Path) -> Result<Self, HubError> {
        Self::open_with(path, Durability::Full)
    }

    /// Opens the accounts database at `path`; under `Full` a revocation is on disk before it
    /// is acknowledged.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, HubError> {
        Self::over(Box::new(SqliteAccounts::open(path, durability)?))
    }

    /// An accounts database in memory (tests, throwaway hubs).
    pub fn in_memory() -> Result<Self, HubError> {
        Self::over(Box::new(SqliteAccounts::in_memory()?))
    }

    /// Accounts over any account store (PostgreSQL, say).
    pub fn over(store: Box<dyn AccountStore>) -> Result<Self, HubError> {
        let authority = authority_key(&*store)?;
        let version = store.version()?;
        let keyring = load_keyring(&*store, &authority)?;
        Ok(Accounts {
            store,
            authority,
            keyring: RwLock::new(Arc::new(keyring)),
            loaded_at: Mutex::new(version),
        })
    }

    /// Creates a user.
    pub fn add_user(&self, user: &UserId) -> Result<(), HubError> {
        if !self.store.add_user(user, now())? {
            return Err(HubError::AlreadyExists(format!("user {user}")));
        }
        self.change_keyring(|k| k.add_user(user.clone()));
        Ok(())
    }

    /// Whether the user exists.
    pub fn has_user(&self, user: &UserId) -> Result<bool, HubError> {
        Ok(self.store.has_user(user)?)
    }

    /// Every user id, sorted.
    pub fn users(&self) -> Result<Vec<UserId>, HubError> {
        Ok(self.store.users()?)
    }

    /// Registers a device of `user` and mints its first token, which is returned (and never
    /// stored in clear). Device ids are unique across the hub, revoked ones included.
    pub fn add_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
        kind: &str,
    ) -> Result<String, HubError> {
        self.add_device_enrolled(user, device, name, kind, None)
    }

    /// Registers a device enrolled by another device's code (see `enrollment`).
    pub(crate) fn add_device_enrolled(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
        kind: &str,
        enrolled_by: Option<&DeviceId>,
    ) -> Result<String, HubError> {
        let token = new_token();
        match self
            .store
            .add_device(user, device, name, kind, now(), &hash(&token), enrolled_by)?
        {
            AddDevice::Added => {}
            AddDevice::NoSuchUser => return Err(HubError::NotFound(format!("user {user}"))),
            AddDevice::Exists => return Err(HubError::AlreadyExists(format!("device {device}"))),
        }
        self.change_keyring(|k| k.register(device.clone()));
        Ok(token)
    }

    /// Mints another token for an existing, unrevoked device (its other tokens stay valid).
    pub fn mint_token(&self, device: &DeviceId) -> Result<String, HubError> {
        let token = new_token();
        if !self.store.add_token(device, &hash(&token), now())? {
            return Err(HubError::NotFound(format!("device {device}")));
        }
        Ok(token)
    }

    /// Revokes a device: its tokens are deleted, and it can never be registered again. The
    /// devices it enrolled with its codes (and theirs, in turn) that were not confirmed since
    /// are revoked with it. Returns its owner.
    pub fn revoke_device(&self, device: &DeviceId) -> Result<UserId, HubError> {
        Ok(self.revoke_with_enrolled(device)?.0)
    }

    /// [`revoke_device`](Self::revoke_device), also giving every device revoked (the device
    /// first).
    pub fn revoke_with_enrolled(
        &self,
        device: &DeviceId,
    ) -> Result<(UserId, Vec<DeviceId>), HubError> {
        let at = now();
        let Some(owner) = self.store.revoke_device(device, at)? else {
            return Err(HubError::NotFound(format!("device {device}")));
        };
        let mut revoked = vec![device.clone()];
        // Who enrolled whom, read once: live devices by their enroller.
        let mut enrolled: HashMap<DeviceId, Vec<DeviceId>> = HashMap::new();
        for d in self.store.all_devices()? {
            if let (None, Some(by)) = (d.revoked_at, d.enrolled_by) {
                enrolled.entry(by).or_default().push(d.id);
            }
        }
        // Breadth first through "enrolled by"; each device is revoked once, so the walk ends
        // after at most as many steps as there are devices.
        let mut i = 0;
        while i < revoked.len() {
            let by = revoked[i].clone();
            i += 1;
            for d in enrolled.remove(&by).unwrap_or_default() {
                if self.store.revoke_device(&d, at)?.is_some() {
                    revoked.push(d);
                }
            }
        }
        self.revoke_in_keyring(&owner, &revoked, Timestamp::from_unix(at)?);
        Ok((owner, revoked))
    }

    /// Revokes `user`'s `devices` from `when` on in the keyring, with the authority's signed
    /// statements that every `feeds` answer passes on to the devices that need them.
    pub(crate) fn revoke_in_keyring(&self, user: &UserId, devices: &[DeviceId], when: Timestamp) {
        self.change_keyring(|k| {
            for d in devices {
                k.revoke_as_authority(&self.authority, user.clone(), d, when);
            }
        });
    }

    /// Who a bearer token stands for (`None`: unknown or revoked).
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, HubError> {
        if token.len() > 256 {
            return Ok(None);
        }
        Ok(self
            .store
            .principal(&hash(token))?
            .map(|(user, device)| Principal { user, device }))
    }

    /// The unrevoked devices of `user`, by id.
    pub fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, HubError> {
        Ok(self
            .store
            .devices(user)?
            .into_iter()
            .map(|d| DeviceRecord {
                id: d.id,
                owner: d.owner,
                name: d.name,
                kind: d.kind,
                created_at: d.created_at,
                last_seen: d.last_seen,
            })
            .collect())
    }
}

/// The authority's key: read from the store, or made on first open and saved there (when
/// two processes open a new database together, both keep the one stored first).
fn authority_key(store: &dyn AccountStore) -> Result<SecretKey, HubError> {
    let decode = |text: &str| {
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(SecretKey::from_seed)
            .ok_or_else(|| HubError::Accounts("the authority key is malformed".into()))
    };
    if let Some(text) = store.key("authority")? {
        return decode(&text);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| HubError::Accounts(format!("no random source for the authority key: {e}")))?;
    decode(&store.init_key("authority", &URL_SAFE_NO_PAD.encode(seed))?)
}

/// Every registered device, with its certificate and revocation, as a keyring.
fn load_keyring(
    store: &dyn AccountStore,
    authority: &SecretKey,
) -> Result<MemoryKeyring, HubError> {
    let mut ring = MemoryKeyring::new(authority.public());
    // The accounts, so that the guard refuses invitations of users who have none.
    for u in store.users()? {
        ring.add_user(u);
    }
    for d in store.all_devices()? {
        ring.register(d.id.clone());
        if let Some(body) = d.certificate {
            let cert: DeviceCertificate = serde_json::from_str(&body)
                .map_err(|e| HubError::Accounts(format!("certificate of {}: {e}", d.id)))?;
            ring.add(cert)?;
        }
        if let Some(at) = d.revoked_at {
            ring.revoke_as_authority(authority, d.owner.clone(), &d.id, Timestamp::from_unix(at)?);
        }
    }
    Ok(ring)
}

impl Accounts {
    /// The authority's public key (devices pin it when they enroll).
    pub fn authority_key(&self) -> PublicKey {
        self.authority.public()
    }

    /// The authority's signing key, for the versions the hub writes on REST callers' behalf.
    pub(crate) fn authority(&self) -> &SecretKey {
        &self.authority
    }

    /// The keyring the guard checks signatures against (a snapshot; cheap to clone).
    ///
    /// Devices registered, enrolled or revoked by another process on the same database (the
    /// admin CLI) are seen from the next call on.
    pub fn keyring(&self) -> Arc<MemoryKeyring> {
        if let Err(e) = self.reload_if_changed() {
            tracing::warn!(error = %e, "could not re-read the devices; using the keyring as it was");
        }
        self.snapshot()
    }

    fn snapshot(&self) -> Arc<MemoryKeyring> {
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload_if_changed(&self) -> Result<(), HubError> {
        let version = self.store.version()?;
        let mut loaded = self.loaded_at.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == version {
            return Ok(());
        }
        let mut ring = load_keyring(&*self.store, &self.authority)?;
        if let Some(d) = self.snapshot().authority_device() {
            ring.set_authority_device(d.clone());
        }
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        *loaded = version;
        Ok(())
    }

    /// Names the hub's own endpoint, whose versions the authority key signs.
    pub(crate) fn set_authority_device(&self, device: DeviceId) {
        self.change_keyring(|k| k.set_authority_device(device));
    }

    pub(crate) fn change_keyring(&self, f: impl FnOnce(&mut MemoryKeyring)) {
        let mut guard = self.keyring.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// Certifies the key of the token's device, valid from five minutes ago for `validity`
    /// seconds. A device keeps the key it first enrolled (enrolling it again renews the
    /// certificate); a revoked device is never certified.
    pub fn enroll(
        &self,
        principal: &Principal,
        key: PublicKey,
        validity: i64,
    ) -> Result<Enrollment, HubError> {
        if !self.store.is_live(&principal.user, &principal.device)? {
            return Err(HubError::NotFound(format!("device {}", principal.device)));
        }
        if !key.is_sound() {
            // No signature by such a key verifies; certifying it would only mislead.
            return Err(HubError::Core(mesh_core::CoreError::InvalidId {
                kind: "device key",
                reason: format!(
                    "{key} is not the canonical encoding of a curve point without small order"
                ),
            }));
        }
        if let Some(known) = self.snapshot().device(&principal.device) {
            if known.certificate.key != key {
                return Err(HubError::AlreadyExists(format!(
                    "a certificate for device {} with another key",
                    principal.device
                )));
            }
        }
        let t = now();
        let certificate = DeviceCertificate::issue(
            &self.authority,
            principal.user.clone(),
            principal.device.clone(),
            key,
            Timestamp::from_unix(t - 300)?,
            Timestamp::from_unix(t.saturating_add(validity))?,
        );
        let body =
            serde_json::to_string(&certificate).map_err(|e| HubError::Accounts(e.to_string()))?;
        self.store.set_certificate(&principal.device, &body, t)?;
        let mut added = Ok(());
        self.change_keyring(|k| added = k.add(certificate.clone()));
        added?;
        let ring = self.snapshot();
        Ok(Enrollment {
            certificate,
            authority: self.authority.public(),
            authority_device: ring
                .authority_device()
                .cloned()
                .ok_or_else(|| HubError::Accounts("the hub's endpoint is not set".into()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::trust::{KeyStatus, Keyring};

    /// The admin CLI works on the database while the hub runs: the hub's keyring follows.
    #[test]
    fn the_keyring_sees_devices_added_and_revoked_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.db");
        let hub = Accounts::open(&path).unwrap();
        let cli = Accounts::open(&path).unwrap();
        assert_eq!(hub.authority_key(), cli.authority_key());
        hub.set_authority_device("hub".parse().unwrap());
        let ann: UserId = "ann".parse().unwrap();
        let phone: DeviceId = "phone".parse().unwrap();
        cli.add_user(&ann).unwrap();
        cli.add_device(&ann, &phone, "P", "phone").unwrap();
        assert_eq!(hub.keyring().lookup(&phone), KeyStatus::Uncertified);
        let key = mesh_core::trust::SecretKey::from_seed([3; 32]).public();
        let principal = Principal {
            user: ann.clone(),
            device: phone.clone(),
        };
        hub.enroll(&principal, key, 3600).unwrap();
        assert!(
            matches!(hub.keyring().lookup(&phone), KeyStatus::Device(d) if d.revoked_at.is_none())
        );
        cli.revoke_device(&phone).unwrap();
        assert!(
            matches!(hub.keyring().lookup(&phone), KeyStatus::Device(d) if d.revoked_at.is_some())
        );
        assert!(matches!(
            hub.keyring().lookup(&"hub".parse().unwrap()),
            KeyStatus::Authority(_)
        ));
    }

    #[test]
    fn tokens_authenticate_until_revoked() {
        let a = Accounts::in_memory().unwrap();
        let ann: UserId = "ann".parse().unwrap();
        let laptop: DeviceId = "laptop".parse().unwrap();
        assert!(matches!(
            a.add_device(&ann, &laptop, "L", "laptop"),
            Err(HubError::NotFound(_))
        ));
        a.add_user(&ann).unwrap();
        assert!(matches!(a.add_user(&ann), Err(HubError::AlreadyExists(_))));
        let t1 = a.add_device(&ann, &laptop, "L", "laptop").unwrap();
        let t2 = a.mint_token(&laptop).unwrap();
        assert_ne!(t1, t2);
        let p = a.authenticate(&t1).unwrap().unwrap();
        assert_eq!((p.user, p.device.clone()), (ann.clone(), laptop.clone()));
        assert!(a.authenticate(&t2).unwrap().is_some());
        assert!(a.authenticate("mesh_nope").unwrap().is_none());
        assert_eq!(a.devices(&ann).unwrap().len(), 1);
        assert_eq!(a.revoke_device(&laptop).unwrap(), ann);
        assert!(a.authenticate(&t1).unwrap().is_none());
        assert!(a.authenticate(&t2).unwrap().is_none());
        assert!(a.devices(&ann).unwrap().is_empty());
        assert!(a.mint_token(&laptop).is_err());
        assert!(matches!(
            a.add_device(&ann, &laptop, "L", "laptop"),
            Err(HubError::AlreadyExists(_))
        ));
    }

    #[test]
    fn only_hashes_are_stored() {
        let a = Accounts::in_memory().unwrap();
        let ann: UserId = "ann".parse().unwrap();
        a.add_user(&ann).unwrap();
        let t = a
            .add_device(&ann, &"d".parse().unwrap(), "d", "phone")
            .unwrap();
        let p = a.store.principal(&hash(&t)).unwrap();
        assert!(p.is_some(), "the hash is what is stored");
        assert!(
            a.store.principal(&t).unwrap().is_none(),
            "the token itself is not"
        );
    }
}
