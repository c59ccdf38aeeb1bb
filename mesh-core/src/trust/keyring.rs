//! Keyrings: what a verifying replica knows about the devices whose signatures it checks.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::Result;
use crate::id::{DeviceId, UserId};
use crate::time::Timestamp;
use crate::trust::cert::DeviceCertificate;
use crate::trust::keys::{PublicKey, SecretKey};
use crate::trust::revocation::Revocation;

/// A device whose certificate the keyring holds (and has verified), with its revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedDevice {
    /// The verified certificate.
    pub certificate: DeviceCertificate,
    /// When the device was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// What a keyring says about the `by` of a history item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// The authority's own endpoint (the hub writing REST versions): signed with the
    /// authority key.
    Authority(PublicKey),
    /// A certified device of the mesh.
    Device(CertifiedDevice),
    /// A device of the mesh that holds no valid certificate: its items cannot be verified and
    /// are refused.
    Uncertified,
    /// Not a device of this mesh (an endpoint of another FeedSync implementation): its items
    /// may be unsigned and count as writes of the user who pushes them.
    Foreign,
}

/// The devices a verifying replica knows. The hub implements it over its accounts; the
/// [`MemoryKeyring`] serves tests and in-process hubs.
pub trait Keyring: Sync {
    /// What is known of `device`.
    fn lookup(&self, device: &DeviceId) -> KeyStatus;

    /// Whether `user` has an account here: `Some(false)` makes the guard refuse invitations
    /// of that user (`not_found`); `None` (the default) when the keyring cannot tell, and
    /// every user may be invited.
    fn has_user(&self, user: &UserId) -> Option<bool> {
        let _ = user;
        None
    }

    /// Whether the keyring holds any revocation statement (the guard looks for those to
    /// pass on only then).
    fn any_revocations(&self) -> bool {
        false
    }

    /// The authority's signed revocation statements this keyring holds for `user`'s devices,
    /// to pass on to whoever syncs with this replica (the guard sends each user those of the
    /// users they share a folder with). None by default.
    fn revocations_of(&self, user: &UserId) -> Vec<Revocation> {
        let _ = user;
        Vec::new()
    }

    /// The certificates of `user`'s devices that this keyring knows and does not know
    /// revoked, to pass on like [`Keyring::revocations_of`]. None by default.
    fn certificates_of(&self, user: &UserId) -> Vec<DeviceCertificate> {
        let _ = user;
        Vec::new()
    }
}

/// Who wrote a version, as far as authorization goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A certified device of this user.
    User(UserId),
    /// The authority itself (the hub, writing on some user's behalf after checking that
    /// user's role).
    Authority,
    /// An endpoint outside the mesh, or an item without `by`: the pushing user answers for it.
    Foreign,
}

/// A keyring in memory: the authority key, the authority's endpoint, certified devices and
/// devices known to exist without a certificate.
///
/// ```
/// use mesh_core::trust::{DeviceCertificate, KeyStatus, Keyring, MemoryKeyring, SecretKey};
/// use mesh_core::time::Timestamp;
/// let authority = SecretKey::from_seed([1; 32]);
/// let t = Timestamp::from_unix(1_700_000_000).unwrap();
/// let mut ring = MemoryKeyring::new(authority.public());
/// let cert = DeviceCertificate::issue(&authority, "ann".parse().unwrap(),
///     "laptop".parse().unwrap(), SecretKey::from_seed([2; 32]).public(), t, t.plus_secs(60));
/// ring.add(cert).unwrap();
/// assert!(matches!(ring.lookup(&"laptop".parse().unwrap()), KeyStatus::Device(_)));
/// assert_eq!(ring.lookup(&"elsewhere".parse().unwrap()), KeyStatus::Foreign);
/// ```
#[derive(Debug, Clone)]
pub struct MemoryKeyring {
    authority: PublicKey,
    authority_device: Option<DeviceId>,
    devices: HashMap<DeviceId, CertifiedDevice>,
    /// The certified devices of each user.
    by_user: HashMap<UserId, BTreeSet<DeviceId>>,
    registered: HashSet<DeviceId>,
    /// Every revocation known, certificate or not yet (the earliest date wins).
    revoked: HashMap<DeviceId, Timestamp>,
    /// The signed statements behind revocations, to relay.
    statements: HashMap<DeviceId, Revocation>,
    /// The devices with a statement, by user.
    statements_by_user: HashMap<UserId, BTreeSet<DeviceId>>,
    /// The users with an account, once any is named ([`MemoryKeyring::add_user`]).
    users: Option<HashSet<UserId>>,
}

impl MemoryKeyring {
    /// An empty keyring trusting `authority`.
    pub fn new(authority: PublicKey) -> Self {
        MemoryKeyring {
            authority,
            authority_device: None,
            devices: HashMap::new(),
            by_user: HashMap::new(),
            registered: HashSet::new(),
            revoked: HashMap::new(),
            statements: HashMap::new(),
            statements_by_user: HashMap::new(),
            users: None,
        }
    }

    /// The authority key this keyring trusts.
    pub fn authority(&self) -> &PublicKey {
        &self.authority
    }

    /// The endpoint whose items the authority key signs, if named.
    pub fn authority_device(&self) -> Option<&DeviceId> {
        self.authority_device.as_ref()
    }

    /// Names the endpoint whose items the authority key signs.
    pub fn set_authority_device(&mut self, device: DeviceId) {
        self.authority_device = Some(device);
    }

    /// Adds a certificate after checking that the trusted authority signed it. A newer
    /// certificate for the same device replaces the older one but keeps its revocation, and a
    /// device revoked before its certificate arrived stays revoked.
    pub fn add(&mut self, certificate: DeviceCertificate) -> Result<()> {
        certificate.verify(&self.authority)?;
        let revoked_at = self.revoked.get(&certificate.device).copied();
        if let Some(old) = self.devices.get(&certificate.device) {
            if old.certificate.user != certificate.user {
                if let Some(set) = self.by_user.get_mut(&old.certificate.user) {
                    set.remove(&certificate.device);
                }
            }
        }
        self.by_user
            .entry(certificate.user.clone())
            .or_default()
            .insert(certificate.device.clone());
        self.devices.insert(
            certificate.device.clone(),
            CertifiedDevice {
                certificate,
                revoked_at,
            },
        );
        Ok(())
    }

    /// Records that `device` belongs to the mesh, certificate or not: its items are never
    /// treated as foreign.
    pub fn register(&mut self, device: DeviceId) {
        self.registered.insert(device);
    }

    /// Records that `user` has an account. From the first call on, the keyring knows every
    /// account ([`Keyring::has_user`] answers), and the guard refuses invitations of users
    /// it was not given; before it, any user may be invited.
    pub fn add_user(&mut self, user: UserId) {
        self.users.get_or_insert_with(HashSet::new).insert(user);
    }

    /// Revokes `device` from `at` on (an earlier revocation of it stands). Applies to its
    /// certificate whether the keyring holds it yet or receives it later.
    pub fn revoke(&mut self, device: &DeviceId, at: Timestamp) {
        self.registered.insert(device.clone());
        let at = *self
            .revoked
            .entry(device.clone())
            .and_modify(|r| *r = (*r).min(at))
            .or_insert(at);
        if let Some(d) = self.devices.get_mut(device) {
            d.revoked_at = Some(at);
        }
    }

    /// Takes an authority's revocation statement: checked against the trusted authority,
    /// applied ([`MemoryKeyring::revoke`]) and kept to relay. `Ok(true)` when it told the
    /// keyring something new (a device not known revoked, or an earlier date); a statement
    /// that does not verify is refused and changes nothing.
    pub fn learn(&mut self, statement: Revocation) -> Result<bool> {
        statement.verify(&self.authority)?;
        let before = self.revoked.get(&statement.device).copied();
        if before.is_some_and(|b| b <= statement.at) {
            // A later statement adds nothing; one for a revocation known without a
            // statement (`revoke`) is kept to relay.
            if !self.statements.contains_key(&statement.device) {
                self.keep_statement(statement);
            }
            return Ok(false);
        }
        self.revoke(&statement.device, statement.at);
        self.keep_statement(statement);
        Ok(true)
    }

    /// Revokes `user`'s `device` from `at` on as the authority itself: `authority` (the key
    /// this keyring trusts) signs the statement the keyring then relays. Signed with another
    /// key, the device is revoked all the same, without a statement to relay.
    pub fn revoke_as_authority(
        &mut self,
        authority: &SecretKey,
        user: UserId,
        device: &DeviceId,
        at: Timestamp,
    ) {
        if self
            .learn(Revocation::issue(authority, user, device.clone(), at))
            .is_err()
        {
            self.revoke(device, at);
        }
    }

    /// Keeps `statement` as the one relayed for its device, indexed by its user.
    fn keep_statement(&mut self, statement: Revocation) {
        self.statements_by_user
            .entry(statement.user.clone())
            .or_default()
            .insert(statement.device.clone());
        let (device, user) = (statement.device.clone(), statement.user.clone());
        if let Some(old) = self.statements.insert(device, statement) {
            // The same device under another user's name (both the authority's word): the
            // index follows the statement kept.
            if old.user != user {
                if let Some(set) = self.statements_by_user.get_mut(&old.user) {
                    set.remove(&old.device);
                }
            }
        }
    }

    /// Every signed revocation statement held, by device.
    pub fn revocations(&self) -> Vec<Revocation> {
        let mut all: Vec<Revocation> = self.statements.values().cloned().collect();
        all.sort_by(|a, b| a.device.cmp(&b.device));
        all
    }

    /// How many signed revocation statements the keyring holds.
    pub fn revocation_count(&self) -> usize {
        self.statements.len()
    }

    /// Every certificate held, revoked devices' included.
    pub fn certificates(&self) -> impl Iterator<Item = &DeviceCertificate> {
        self.devices.values().map(|d| &d.certificate)
    }

    /// How many certificates the keyring holds.
    pub fn certificate_count(&self) -> usize {
        self.devices.len()
    }

    /// When `device` was revoked, if the keyring knows it was.
    pub fn revoked_at(&self, device: &DeviceId) -> Option<Timestamp> {
        self.revoked.get(device).copied()
    }

    /// The certified device, if any.
    pub fn device(&self, device: &DeviceId) -> Option<&CertifiedDevice> {
        self.devices.get(device)
    }
}

impl Keyring for MemoryKeyring {
    fn lookup(&self, device: &DeviceId) -> KeyStatus {
        if self.authority_device.as_ref() == Some(device) {
            return KeyStatus::Authority(self.authority);
        }
        match self.devices.get(device) {
            Some(d) => KeyStatus::Device(d.clone()),
            None if self.registered.contains(device) => KeyStatus::Uncertified,
            None => KeyStatus::Foreign,
        }
    }

    fn has_user(&self, user: &UserId) -> Option<bool> {
        self.users.as_ref().map(|u| u.contains(user))
    }

    fn any_revocations(&self) -> bool {
        !self.statements.is_empty()
    }

    fn revocations_of(&self, user: &UserId) -> Vec<Revocation> {
        let Some(devices) = self.statements_by_user.get(user) else {
            return Vec::new();
        };
        devices
            .iter()
            .filter_map(|d| self.statements.get(d))
            .cloned()
            .collect()
    }

    fn certificates_of(&self, user: &UserId) -> Vec<DeviceCertificate> {
        let Some(devices) = self.by_user.get(user) else {
            return Vec::new();
        };
        devices
            .iter()
            .filter_map(|d| self.devices.get(d))
            .filter(|d| d.revoked_at.is_none())
            .map(|d| d.certificate.clone())
            .collect()
    }
}

/// A keyring that knows no device: every item counts as foreign, so every version is
/// authorized as a write of the user who pushes it. For replicas that serve a single trusted
/// party, and for tests of the role rules alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeyring;

impl Keyring for NoKeyring {
    fn lookup(&self, _device: &DeviceId) -> KeyStatus {
        KeyStatus::Foreign
    }
}
