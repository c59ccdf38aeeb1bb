//! How devices join and leave a user's account beyond the admin's commands: enrollment codes
//! minted by a device the user already has, revocations that another device confirms, user
//! removal, and the last-seen times kept across restarts.
//!
//! * A code is 128 random bits (`mesh-code-` and 32 hex digits), kept hashed, valid for
//!   [`CODE_VALIDITY`] and used once; the device it registers is *enrolled by* the minting
//!   device until the user confirms it from another device. Revoking a device revokes the
//!   devices it enrolled that were not confirmed, so a stolen token cannot leave devices of
//!   its own behind.
//! * A device revokes itself at once; revoking another device takes the requests of two live
//!   devices of the user (or the admin's command), so one stolen token cannot lock the user's
//!   other devices out.

use mesh_core::id::{DeviceId, UserId};

use crate::accounts::{hash, now, Accounts, Principal};
use crate::error::HubError;

/// How long an enrollment code can be used.
pub const CODE_VALIDITY: i64 = 15 * 60;

/// What a revocation request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The devices now revoked (the target first, then those it enrolled).
    Revoked(Vec<DeviceId>),
    /// Recorded; another live device of the user must ask too.
    Pending,
}

impl Accounts {
    /// Mints a one-time enrollment code for a new device of the caller's user; returns the
    /// code and when it expires.
    pub fn mint_code(&self, by: &Principal) -> Result<(String, i64), HubError> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw)
            .map_err(|e| HubError::Accounts(format!("no random source for a code: {e}")))?;
        let code = format!(
            "mesh-code-{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let expires = now() + CODE_VALIDITY;
        if !self
            .store
            .add_code(&by.user, &by.device, &hash(&code), expires)?
        {
            return Err(HubError::NotFound(format!("device {}", by.device)));
        }
        Ok((code, expires))
    }

    /// Registers `device` with an enrollment code (used up whatever happens); returns its
    /// user and first token. A wrong, used or expired code, or one whose minter was revoked
    /// since, is [`HubError::NotFound`].
    pub fn register_with_code(
        &self,
        code: &str,
        device: &DeviceId,
        name: &str,
        kind: &str,
    ) -> Result<(UserId, String), HubError> {
        if code.len() > 128 {
            return Err(HubError::NotFound("enrollment code".into()));
        }
        let Some((user, minter)) = self.store.redeem_code(&hash(code), now())? else {
            return Err(HubError::NotFound("enrollment code".into()));
        };
        let token = self.add_device_enrolled(&user, device, name, kind, Some(&minter))?;
        Ok((user, token))
    }

    /// Confirms `target` (a device of the caller's user, enrolled by a code) from another
    /// device: revoking its enroller no longer revokes it.
    pub fn confirm_device(&self, by: &Principal, target: &DeviceId) -> Result<(), HubError> {
        if by.device == *target {
            return Err(HubError::Forbidden(
                "a device cannot confirm itself; confirm it from another device".into(),
            ));
        }
        let mine = self.devices(&by.user)?.iter().any(|d| d.id == *target);
        if !mine || !self.store.confirm_device(target)? {
            return Err(HubError::NotFound(format!("unconfirmed device {target}")));
        }
        Ok(())
    }

    /// A device of the caller's user asks to revoke `target`: at once for itself, otherwise
    /// once two live devices asked.
    pub fn request_revocation(
        &self,
        by: &Principal,
        target: &DeviceId,
    ) -> Result<Revocation, HubError> {
        let mine = self.devices(&by.user)?.iter().any(|d| d.id == *target);
        if !mine {
            return Err(HubError::NotFound(format!("device {target}")));
        }
        if by.device != *target {
            let others = self.store.request_revocation(target, &by.device, now())?;
            if others.iter().all(|d| d == target) {
                return Ok(Revocation::Pending);
            }
        }
        Ok(Revocation::Revoked(self.revoke_with_enrolled(target)?.1))
    }

    /// Removes a user (the admin's command): every device revoked, the id never reused.
    /// Returns the devices that were live.
    pub fn remove_user(&self, user: &UserId) -> Result<Vec<DeviceId>, HubError> {
        let Some(devices) = self.store.remove_user(user, now())? else {
            return Err(HubError::NotFound(format!("user {user}")));
        };
        let when = mesh_core::time::Timestamp::from_unix(now())?;
        self.revoke_in_keyring(user, &devices, when);
        Ok(devices)
    }

    /// Records when devices were last seen (kept across restarts).
    pub fn record_seen(&self, seen: &[(DeviceId, i64)]) -> Result<(), HubError> {
        Ok(self.store.touch(seen)?)
    }

    /// Every device of `user`, revoked ones included, with last-seen times (the admin's
    /// `device list`).
    pub fn all_devices_of(
        &self,
        user: &UserId,
    ) -> Result<Vec<mesh_store::accounts::DeviceRow>, HubError> {
        Ok(self
            .store
            .all_devices()?
            .into_iter()
            .filter(|d| d.owner == *user)
            .collect())
    }
}
