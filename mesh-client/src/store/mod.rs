//! Local stores: SQLite (the embedded default) and memory, from the storage layer
//! ([`mesh_store`]), and what a device keeps in them beside its replica.
//!
//! The store implementations live in `mesh-store`; this module re-exports what an
//! application configures ([`StoreConfig`], [`Durability`]) and adds the device's own records:
//! its signing key and its enrollments.

pub use mesh_store::{
    blobs, lock_path, sqlite, BlobStore, Durability, SqliteStore, StoreConfig, StoreError,
};
pub(crate) use mesh_store::{AnyStore as ClientStore, StoreLock};

use base64::Engine as _;
use mesh_core::id::RemoteId;
use mesh_core::trust::{Enrollment, Revocation, SecretKey};
use mesh_store::AnyStore;

use crate::error::{ClientError, Result};

/// What a device keeps in its store beside the replica: its signing key and the enrollment
/// (certificate and pinned authority) it holds with each remote.
pub(crate) trait DeviceStore {
    /// This device's signing key: read from a SQLite store, or made from the operating
    /// system's random source and saved there on first use. A memory store makes a new key
    /// each time it is opened (its data does not outlive it either). The key never leaves the
    /// store: nothing sends it anywhere.
    fn device_key(&mut self) -> Result<SecretKey>;
    /// Makes `key` this device's signing key: saved in a SQLite store that holds none yet,
    /// refused ([`ClientError::Config`]) by one that holds another.
    fn adopt_device_key(&mut self, key: &SecretKey) -> Result<()>;
    /// The enrollment this device holds with `remote` (its certificate and the pinned
    /// authority), if it was saved (SQLite stores only).
    fn enrollment(&self, remote: &RemoteId) -> Result<Option<Enrollment>>;
    /// Saves the enrollment with `remote` (a no-op for memory stores).
    fn set_enrollment(&mut self, remote: &RemoteId, e: &Enrollment) -> Result<()>;
    /// The revocation statements the device learned (SQLite stores only), as saved: the
    /// caller checks their signatures.
    fn revocations(&self) -> Result<Vec<Revocation>>;
    /// Saves `all` the statements the device keeps, in place of those saved before (a no-op
    /// for memory stores).
    fn set_revocations(&mut self, all: &[Revocation]) -> Result<()>;
}

/// The store's meta key of the saved revocation statements (a JSON array).
const REVOCATIONS: &str = "revocations";

/// The store's meta key of the device's signing key.
const DEVICE_KEY: &str = "device_key";

impl DeviceStore for ClientStore {
    fn adopt_device_key(&mut self, key: &SecretKey) -> Result<()> {
        let AnyStore::Sqlite(s) = self else {
            return Ok(());
        };
        if s.meta(DEVICE_KEY)?.is_some() {
            if &self.device_key()? != key {
                return Err(ClientError::Config(
                    "the store already holds another device key".into(),
                ));
            }
            return Ok(());
        }
        s.set_meta(
            DEVICE_KEY,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_seed()),
        )?;
        Ok(())
    }

    fn device_key(&mut self) -> Result<SecretKey> {
        const KEY: &str = DEVICE_KEY;
        let AnyStore::Sqlite(s) = self else {
            return fresh_key();
        };
        if let Some(text) = s.meta(KEY)? {
            let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| ClientError::CorruptStore {
                    path: s.location().to_owned(),
                    reason: "the device key is malformed".into(),
                })?;
            return Ok(SecretKey::from_seed(seed));
        }
        let key = fresh_key()?;
        s.set_meta(
            KEY,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_seed()),
        )?;
        Ok(key)
    }

    fn enrollment(&self, remote: &RemoteId) -> Result<Option<Enrollment>> {
        let AnyStore::Sqlite(s) = self else {
            return Ok(None);
        };
        match s.meta(&format!("enrollment:{remote}"))? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| ClientError::CorruptStore {
                        path: s.location().to_owned(),
                        reason: format!("the enrollment with {remote} is malformed: {e}"),
                    })
            }
        }
    }

    fn set_enrollment(&mut self, remote: &RemoteId, e: &Enrollment) -> Result<()> {
        if let AnyStore::Sqlite(s) = self {
            let text =
                serde_json::to_string(e).map_err(|e| ClientError::Internal(e.to_string()))?;
            s.set_meta(&format!("enrollment:{remote}"), &text)?;
        }
        Ok(())
    }

    fn revocations(&self) -> Result<Vec<Revocation>> {
        let AnyStore::Sqlite(s) = self else {
            return Ok(Vec::new());
        };
        match s.meta(REVOCATIONS)? {
            None => Ok(Vec::new()),
            Some(text) => serde_json::from_str(&text).map_err(|e| ClientError::CorruptStore {
                path: s.location().to_owned(),
                reason: format!("the saved revocations are malformed: {e}"),
            }),
        }
    }

    fn set_revocations(&mut self, all: &[Revocation]) -> Result<()> {
        if let AnyStore::Sqlite(s) = self {
            let text =
                serde_json::to_string(all).map_err(|e| ClientError::Internal(e.to_string()))?;
            s.set_meta(REVOCATIONS, &text)?;
        }
        Ok(())
    }
}

/// A new signing key from the operating system's random source.
pub(crate) fn fresh_key() -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| ClientError::Internal(format!("no random source for a device key: {e}")))?;
    Ok(SecretKey::from_seed(seed))
}
