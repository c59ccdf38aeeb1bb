//! Accounts: users, their devices, and the devices' bearer tokens, in SQLite.
//!
//! A token is `mesh_` followed by 64 hex digits (244 random bits from two v4 UUIDs). Only its
//! SHA-256 is stored, so a copy of the database does not hand out access. A token is bound to
//! one user and one device; revoking the device deletes its tokens, so the next request with
//! any of them is refused (and the hub closes the device's open notification streams).

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mesh_core::id::{DeviceId, UserId};
use mesh_core::time::Timestamp;
use mesh_core::trust::{DeviceCertificate, Enrollment, MemoryKeyring, PublicKey, SecretKey};
use rusqlite::{params, Connection, OptionalExtension};
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
}

/// The accounts database. Cheap to share behind an `Arc`; calls are short and synchronous.
///
/// It also holds the mesh's authority: the key that signs device certificates (made on first
/// open and kept in the database) and a keyring of every registered device, its certificate
/// and its revocation, which the guard checks signatures against.
pub struct Accounts {
    conn: Mutex<Connection>,
    authority: SecretKey,
    keyring: RwLock<Arc<MemoryKeyring>>,
    /// SQLite's `data_version` when the keyring was last loaded: another process (the admin
    /// CLI) registering or revoking a device changes it, and the keyring is read again.
    loaded_at: Mutex<i64>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_device ON tokens(device_id);
CREATE TABLE IF NOT EXISTS certificates (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hub_keys (
    name TEXT PRIMARY KEY,
    seed TEXT NOT NULL
);
";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The stored form of a token.
fn hash(token: &str) -> String {
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
    /// Opens (creating if needed) the accounts database at `path`.
    pub fn open(path: &Path) -> Result<Self, HubError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::init(conn)
    }

    /// An accounts database in memory (tests, throwaway hubs).
    pub fn in_memory() -> Result<Self, HubError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, HubError> {
        conn.execute_batch(SCHEMA)?;
        let authority = authority_key(&conn)?;
        let keyring = load_keyring(&conn, &authority)?;
        let version = data_version(&conn)?;
        Ok(Accounts {
            conn: Mutex::new(conn),
            authority,
            keyring: RwLock::new(Arc::new(keyring)),
            loaded_at: Mutex::new(version),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a user.
    pub fn add_user(&self, user: &UserId) -> Result<(), HubError> {
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO users (id, created_at) VALUES (?1, ?2)",
            params![user.as_str(), now()],
        )?;
        if n == 0 {
            return Err(HubError::AlreadyExists(format!("user {user}")));
        }
        Ok(())
    }

    /// Whether the user exists.
    pub fn has_user(&self, user: &UserId) -> Result<bool, HubError> {
        Ok(self
            .lock()
            .query_row("SELECT 1 FROM users WHERE id = ?1", [user.as_str()], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Every user id, sorted.
    pub fn users(&self) -> Result<Vec<UserId>, HubError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT id FROM users ORDER BY id")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.parse()?);
        }
        Ok(out)
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
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE id = ?1", [user.as_str()], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        if !exists {
            return Err(HubError::NotFound(format!("user {user}")));
        }
        let n = tx.execute(
            "INSERT OR IGNORE INTO devices (id, user_id, name, kind, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device.as_str(), user.as_str(), name, kind, now()],
        )?;
        if n == 0 {
            return Err(HubError::AlreadyExists(format!("device {device}")));
        }
        self.change_keyring(|k| k.register(device.clone()));
        let token = new_token();
        tx.execute(
            "INSERT INTO tokens (hash, device_id, created_at) VALUES (?1, ?2, ?3)",
            params![hash(&token), device.as_str(), now()],
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// Mints another token for an existing, unrevoked device (its other tokens stay valid).
    pub fn mint_token(&self, device: &DeviceId) -> Result<String, HubError> {
        let conn = self.lock();
        let live = conn
            .query_row(
                "SELECT 1 FROM devices WHERE id = ?1 AND revoked_at IS NULL",
                [device.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !live {
            return Err(HubError::NotFound(format!("device {device}")));
        }
        let token = new_token();
        conn.execute(
            "INSERT INTO tokens (hash, device_id, created_at) VALUES (?1, ?2, ?3)",
            params![hash(&token), device.as_str(), now()],
        )?;
        Ok(token)
    }

    /// Revokes a device: its tokens are deleted, and it can never be registered again.
    /// Returns its owner.
    pub fn revoke_device(&self, device: &DeviceId) -> Result<UserId, HubError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let owner: Option<String> = tx
            .query_row(
                "SELECT user_id FROM devices WHERE id = ?1 AND revoked_at IS NULL",
                [device.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(owner) = owner else {
            return Err(HubError::NotFound(format!("device {device}")));
        };
        tx.execute(
            "UPDATE devices SET revoked_at = ?2 WHERE id = ?1",
            params![device.as_str(), now()],
        )?;
        tx.execute("DELETE FROM tokens WHERE device_id = ?1", [device.as_str()])?;
        tx.commit()?;
        let at = Timestamp::from_unix(now())?;
        self.change_keyring(|k| k.revoke(device, at));
        Ok(owner.parse()?)
    }

    /// Who a bearer token stands for (`None`: unknown or revoked).
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, HubError> {
        if token.len() > 256 {
            return Ok(None);
        }
        let row: Option<(String, String)> = self
            .lock()
            .prepare_cached(
                "SELECT d.user_id, d.id FROM tokens t JOIN devices d ON d.id = t.device_id
                 WHERE t.hash = ?1 AND d.revoked_at IS NULL",
            )?
            .query_row([hash(token)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((u, d)) => Ok(Some(Principal {
                user: u.parse()?,
                device: d.parse()?,
            })),
            None => Ok(None),
        }
    }

    /// The unrevoked devices of `user`, by id.
    pub fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, HubError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT id, name, kind, created_at FROM devices
             WHERE user_id = ?1 AND revoked_at IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([user.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, name, kind, created_at) = r?;
            out.push(DeviceRecord {
                id: id.parse()?,
                owner: user.clone(),
                name,
                kind,
                created_at,
            });
        }
        Ok(out)
    }
}

/// The authority's key: read from the database, or made on first open and saved there.
fn authority_key(conn: &Connection) -> Result<SecretKey, HubError> {
    let saved: Option<String> = conn
        .query_row(
            "SELECT seed FROM hub_keys WHERE name = 'authority'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(text) = saved {
        let seed = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| HubError::Accounts("the authority key is malformed".into()))?;
        return Ok(SecretKey::from_seed(seed));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| HubError::Accounts(format!("no random source for the authority key: {e}")))?;
    conn.execute(
        "INSERT INTO hub_keys (name, seed) VALUES ('authority', ?1)",
        [URL_SAFE_NO_PAD.encode(seed)],
    )?;
    Ok(SecretKey::from_seed(seed))
}

/// SQLite's count of commits made by other connections to this database.
fn data_version(conn: &Connection) -> Result<i64, HubError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Every registered device, with its certificate and revocation, as a keyring.
fn load_keyring(conn: &Connection, authority: &SecretKey) -> Result<MemoryKeyring, HubError> {
    let mut ring = MemoryKeyring::new(authority.public());
    let mut st = conn.prepare(
        "SELECT d.id, d.revoked_at, c.body FROM devices d
         LEFT JOIN certificates c ON c.device_id = d.id",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (id, revoked, body) = row?;
        let device: DeviceId = id.parse()?;
        ring.register(device.clone());
        if let Some(body) = body {
            let cert: DeviceCertificate = serde_json::from_str(&body)
                .map_err(|e| HubError::Accounts(format!("certificate of {device}: {e}")))?;
            ring.add(cert)?;
        }
        if let Some(at) = revoked {
            ring.revoke(&device, Timestamp::from_unix(at)?);
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
        let conn = self.lock();
        let version = data_version(&conn)?;
        let mut loaded = self.loaded_at.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == version {
            return Ok(());
        }
        let mut ring = load_keyring(&conn, &self.authority)?;
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

    fn change_keyring(&self, f: impl FnOnce(&mut MemoryKeyring)) {
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
        let conn = self.lock();
        let live = conn
            .query_row(
                "SELECT 1 FROM devices WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                [principal.device.as_str(), principal.user.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !live {
            return Err(HubError::NotFound(format!("device {}", principal.device)));
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
        conn.execute(
            "INSERT INTO certificates (device_id, body, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (device_id) DO UPDATE SET body = excluded.body, created_at = excluded.created_at",
            params![principal.device.as_str(), body, t],
        )?;
        drop(conn);
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
        let stored: String = a
            .lock()
            .query_row("SELECT hash FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, t);
        assert_eq!(stored.len(), 64);
    }
}
