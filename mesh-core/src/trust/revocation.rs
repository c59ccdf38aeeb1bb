//! Revocation statements: the mesh authority's signed word that a device is revoked.
//!
//! A hub records a revocation in its accounts; a device that meets peers needs to know it too,
//! or a stolen laptop would go on syncing with its owner's other devices on the LAN. The
//! authority therefore signs a statement per revoked device, sends the statements a user may
//! need with every `feeds` answer, and every replica that learned one relays it the same way:
//! statements travel with the data, through hubs and peers alike, and each receiver checks
//! the signature against the authority it pinned, so no relay can forge or alter one.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::{DeviceId, UserId};
use crate::time::Timestamp;
use crate::trust::keys::{check_authority, put_bytes, PublicKey, SecretKey, Signature};

/// The domain tag that starts every signed revocation message.
pub const REVOCATION_TAG: &[u8] = b"mesh-device-revocation-v1\0";

/// The most revocation statements one `feeds` answer may carry; a receiver ignores the rest.
pub const MAX_REVOCATIONS_PER_ANSWER: usize = 4096;

/// The most device certificates one `feeds` answer may carry; a receiver ignores the rest.
pub const MAX_CERTIFICATES_PER_ANSWER: usize = 4096;

/// The authority's statement that `device` (of `user`) is revoked from `at` on: its
/// handshakes are refused, and so are the versions it dated `at` or later.
///
/// ```
/// use mesh_core::trust::{Revocation, SecretKey};
/// use mesh_core::time::Timestamp;
/// let authority = SecretKey::from_seed([1; 32]);
/// let at = Timestamp::from_unix(1_700_000_000).unwrap();
/// let r = Revocation::issue(&authority, "ann".parse().unwrap(), "phone".parse().unwrap(), at);
/// r.verify(&authority.public()).unwrap();
/// // Another key did not sign it; a changed date breaks the signature.
/// assert!(r.verify(&SecretKey::from_seed([2; 32]).public()).is_err());
/// let mut later = r.clone();
/// later.at = at.plus_secs(60);
/// assert!(later.verify(&authority.public()).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revocation {
    /// The user the device belonged to.
    pub user: UserId,
    /// The revoked device.
    pub device: DeviceId,
    /// From when on the device is revoked.
    pub at: Timestamp,
    /// The public key of the authority that signed it.
    pub authority: PublicKey,
    /// The authority's signature over [`Revocation::signing_bytes`].
    pub sig: Signature,
}

impl Revocation {
    /// Signs the revocation of `user`'s `device` from `at` on with `authority`.
    pub fn issue(authority: &SecretKey, user: UserId, device: DeviceId, at: Timestamp) -> Self {
        let mut r = Revocation {
            user,
            device,
            at,
            authority: authority.public(),
            sig: Signature([0; 64]),
        };
        r.sig = authority.sign(&r.signing_bytes());
        r
    }

    /// The bytes the authority signs: [`REVOCATION_TAG`]; the user and the device (each a
    /// `u32` big-endian byte length then UTF-8); `at` as big-endian `i64` Unix seconds; the
    /// authority's 32 key bytes.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVOCATION_TAG.len() + 96);
        out.extend_from_slice(REVOCATION_TAG);
        put_bytes(&mut out, self.user.as_str().as_bytes());
        put_bytes(&mut out, self.device.as_str().as_bytes());
        out.extend_from_slice(&self.at.unix().to_be_bytes());
        out.extend_from_slice(&self.authority.0);
        out
    }

    /// Checks that the `pinned` authority signed the statement as it is.
    pub fn verify(&self, pinned: &PublicKey) -> Result<()> {
        check_authority(
            pinned,
            &self.authority,
            &self.signing_bytes(),
            &self.sig,
            || format!("the revocation of device {}", self.device),
        )
    }
}
