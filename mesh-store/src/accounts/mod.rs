//! The account store: users, their devices, the devices' token hashes and certificates, and
//! the hub's own keys. The hub's policy (how tokens are made, who may enroll) lives in
//! `mesh-hub`; this is what it keeps.
//!
//! Implementations: [`SqliteAccounts`] (a hub's `accounts.db`, or memory) and, with the
//! `postgres` feature, [`PgAccounts`](crate::postgres::PgAccounts). Both pass [`suite`].

mod sqlite;
pub mod suite;

pub use sqlite::SqliteAccounts;

use mesh_core::id::{DeviceId, UserId};

use crate::error::Result;

/// A registered device as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// The device id.
    pub id: DeviceId,
    /// Its owner.
    pub owner: UserId,
    /// A readable name.
    pub name: String,
    /// What kind of device.
    pub kind: String,
    /// When it was registered (seconds since the epoch).
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Its certificate (JSON), if it enrolled.
    pub certificate: Option<String>,
    /// The device whose enrollment code registered it, until that is confirmed (revoking
    /// that device revokes this one too).
    pub enrolled_by: Option<DeviceId>,
    /// When it last made a request (seconds since the epoch), as last recorded.
    pub last_seen: Option<i64>,
}

/// What [`AccountStore::add_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddDevice {
    /// Registered, with its first token.
    Added,
    /// The user does not exist.
    NoSuchUser,
    /// A device of that id exists (or existed: revoked ids are never reused).
    Exists,
}

/// The storage of a hub's accounts. Every method is one short transaction; implementations
/// are shared between threads.
pub trait AccountStore: Send + Sync + std::fmt::Debug {
    /// Creates a user; `false` if it exists already.
    fn add_user(&self, user: &UserId, at: i64) -> Result<bool>;
    /// Whether the user exists.
    fn has_user(&self, user: &UserId) -> Result<bool>;
    /// Every user id, sorted.
    fn users(&self) -> Result<Vec<UserId>>;
    /// Registers a device of `user` with its first token's hash, atomically; `enrolled_by`
    /// names the device whose enrollment code it used (none for the admin's registrations).
    #[allow(clippy::too_many_arguments)]
    fn add_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
        kind: &str,
        at: i64,
        token_hash: &str,
        enrolled_by: Option<&DeviceId>,
    ) -> Result<AddDevice>;
    /// Records an enrollment code (its hash) minted by a live device of `user`, valid until
    /// `expires_at`; `false` if the minting device is not a live device of the user.
    fn add_code(
        &self,
        user: &UserId,
        minted_by: &DeviceId,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<bool>;
    /// Uses an enrollment code once: its user and the device that minted it, if the code is
    /// unused, unexpired at `now` and its minter still live. A used code never works again.
    fn redeem_code(&self, code_hash: &str, now: i64) -> Result<Option<(UserId, DeviceId)>>;
    /// Forgets who enrolled `device` (the user confirmed it from another device, or the
    /// admin did): revoking the enroller no longer revokes it.
    fn confirm_device(&self, device: &DeviceId) -> Result<bool>;
    /// Records that live device `by` asks to revoke `target`; returns the other live
    /// devices that asked for it before (a second device's request confirms the first).
    fn request_revocation(
        &self,
        target: &DeviceId,
        by: &DeviceId,
        at: i64,
    ) -> Result<Vec<DeviceId>>;
    /// Removes a user: every device revoked (tokens deleted), the id never reused. Returns
    /// the devices that were live.
    fn remove_user(&self, user: &UserId, at: i64) -> Result<Option<Vec<DeviceId>>>;
    /// Records when devices were last seen (a batch; later times only).
    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()>;
    /// Adds a token (hash) to a live device; `false` if the device is unknown or revoked.
    fn add_token(&self, device: &DeviceId, token_hash: &str, at: i64) -> Result<bool>;
    /// Revokes a live device and deletes its tokens; its owner, or `None` if the device is
    /// unknown or already revoked.
    fn revoke_device(&self, device: &DeviceId, at: i64) -> Result<Option<UserId>>;
    /// The user and live device a token hash belongs to.
    fn principal(&self, token_hash: &str) -> Result<Option<(UserId, DeviceId)>>;
    /// Whether `device` is a live device of `user`.
    fn is_live(&self, user: &UserId, device: &DeviceId) -> Result<bool>;
    /// The live devices of `user`, by id.
    fn devices(&self, user: &UserId) -> Result<Vec<DeviceRow>>;
    /// Every device ever registered (revoked ones included), with certificates.
    fn all_devices(&self) -> Result<Vec<DeviceRow>>;
    /// Records (or replaces) a device's certificate.
    fn set_certificate(&self, device: &DeviceId, body: &str, at: i64) -> Result<()>;
    /// One of the hub's keys (say, the authority's seed).
    fn key(&self, name: &str) -> Result<Option<String>>;
    /// Stores a key unless one of that name exists; returns the stored one (so that two
    /// processes starting together agree on one key).
    fn init_key(&self, name: &str, value: &str) -> Result<String>;
    /// A number that changes when another handle (another process, say) changed users,
    /// devices, certificates or revocations: a cache of them is read again when it moves.
    fn version(&self) -> Result<i64>;
}
