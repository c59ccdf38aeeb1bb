//! Device certificates: the mesh authority's word that a key belongs to a user's device.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::id::{DeviceId, UserId};
use crate::time::Timestamp;
use crate::trust::keys::{check_authority, put_bytes, PublicKey, SecretKey, Signature};

/// The domain tag that starts every signed certificate message.
pub const CERT_TAG: &[u8] = b"mesh-device-cert-v1\0";

/// A device certificate: the authority (the hub) binds a user, a device id and the device's
/// public key for a period of validity.
///
/// ```
/// use mesh_core::trust::{DeviceCertificate, SecretKey};
/// use mesh_core::time::Timestamp;
/// let authority = SecretKey::from_seed([1; 32]);
/// let device = SecretKey::from_seed([2; 32]);
/// let t = Timestamp::from_unix(1_700_000_000).unwrap();
/// let cert = DeviceCertificate::issue(
///     &authority, "ann".parse().unwrap(), "laptop".parse().unwrap(),
///     device.public(), t, t.plus_secs(86_400),
/// );
/// cert.verify(&authority.public()).unwrap();
/// assert!(cert.verify(&SecretKey::from_seed([3; 32]).public()).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// The user the device belongs to.
    pub user: UserId,
    /// The device (the `by` of the history items it writes).
    pub device: DeviceId,
    /// The device's public key.
    pub key: PublicKey,
    /// When the certificate was issued (informational: items the device signed before its
    /// enrollment are still vouched for).
    pub not_before: Timestamp,
    /// End of validity (inclusive): items dated later are refused.
    pub not_after: Timestamp,
    /// The public key of the authority that signed it.
    pub authority: PublicKey,
    /// The authority's signature over [`DeviceCertificate::signing_bytes`].
    pub sig: Signature,
}

impl DeviceCertificate {
    /// Issues a certificate signed by `authority`.
    pub fn issue(
        authority: &SecretKey,
        user: UserId,
        device: DeviceId,
        key: PublicKey,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Self {
        let mut cert = DeviceCertificate {
            user,
            device,
            key,
            not_before,
            not_after,
            authority: authority.public(),
            sig: Signature([0; 64]),
        };
        cert.sig = authority.sign(&cert.signing_bytes());
        cert
    }

    /// The bytes the authority signs: [`CERT_TAG`]; the user and the device (each a `u32`
    /// big-endian byte length then UTF-8); the 32 key bytes; `not_before` and `not_after` as
    /// big-endian `i64` Unix seconds; the authority's 32 key bytes.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CERT_TAG.len() + 128);
        out.extend_from_slice(CERT_TAG);
        put_bytes(&mut out, self.user.as_str().as_bytes());
        put_bytes(&mut out, self.device.as_str().as_bytes());
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.not_before.unix().to_be_bytes());
        out.extend_from_slice(&self.not_after.unix().to_be_bytes());
        out.extend_from_slice(&self.authority.0);
        out
    }

    /// Checks that the certificate was signed by the `pinned` authority key and is well formed.
    pub fn verify(&self, pinned: &PublicKey) -> Result<()> {
        if self.not_after < self.not_before {
            return Err(CoreError::UntrustedCertificate(format!(
                "the certificate of device {} ends before it starts",
                self.device
            )));
        }
        check_authority(
            pinned,
            &self.authority,
            &self.signing_bytes(),
            &self.sig,
            || format!("the certificate of device {}", self.device),
        )
    }

    /// Whether the certificate vouches for an item the device dated `at`: any time up to
    /// `not_after`. Items dated before `not_before` are accepted too: an offline-first device
    /// writes (and signs) before it first meets the authority.
    pub fn covers(&self, at: Timestamp) -> bool {
        at <= self.not_after
    }
}

/// What a device gets when it enrolls its key with an authority: its certificate, the
/// authority's key (which the device pins on first contact) and the authority's own endpoint
/// (the `by` of the versions the authority writes itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The device's certificate.
    pub certificate: DeviceCertificate,
    /// The authority's public key.
    pub authority: PublicKey,
    /// The endpoint whose versions the authority key signs.
    pub authority_device: DeviceId,
}

impl Enrollment {
    /// Checks the answer to an enrollment of `device`'s `key` for `user`: the certificate
    /// names them and was signed by the enclosed authority, which must equal `pinned` when the
    /// device already trusts an authority.
    pub fn check(
        &self,
        user: &UserId,
        device: &DeviceId,
        key: &PublicKey,
        pinned: Option<&PublicKey>,
    ) -> Result<()> {
        if let Some(pinned) = pinned {
            if pinned != &self.authority {
                return Err(CoreError::UntrustedCertificate(format!(
                    "the remote's authority key {} is not the pinned {pinned}",
                    self.authority
                )));
            }
        }
        self.certificate.verify(&self.authority)?;
        let c = &self.certificate;
        if &c.user != user || &c.device != device || &c.key != key {
            return Err(CoreError::UntrustedCertificate(format!(
                "the certificate names {}/{} and another key, not {user}/{device}",
                c.user, c.device
            )));
        }
        Ok(())
    }
}
