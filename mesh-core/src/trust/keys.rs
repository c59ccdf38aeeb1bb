//! Ed25519 keys and signatures, with their text forms.
//!
//! Binary values travel as unpadded base64url text (RFC 4648 §5) in JSON and Atom.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

fn decode_fixed<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N]> {
    let bytes = URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .map_err(|e| CoreError::InvalidSignature(format!("{what} is not base64url: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        CoreError::InvalidSignature(format!("{what} has {} bytes, not {N}", b.len()))
    })
}

macro_rules! b64_value {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(s: &str) -> Result<Self> {
                decode_fixed::<$len>($what, s).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

b64_value!(
    /// An Ed25519 public key (32 bytes): a device's or the mesh authority's.
    PublicKey,
    32,
    "public key"
);
b64_value!(
    /// An Ed25519 signature (64 bytes).
    Signature,
    64,
    "signature"
);
b64_value!(
    /// A BLAKE3 digest (32 bytes) of a version's data; see [`super::data_digest`].
    Digest,
    32,
    "digest"
);

impl PublicKey {
    /// Whether these bytes can be a signer's key: the canonical encoding of a curve point
    /// that does not have small order. No signature by any other key verifies, and a hub
    /// certifies no other key.
    ///
    /// ```
    /// use mesh_core::trust::{PublicKey, SecretKey};
    /// assert!(SecretKey::from_seed([7; 32]).public().is_sound());
    /// let mut identity = [0u8; 32];
    /// identity[0] = 1; // y = 1: the neutral point, of order 1
    /// assert!(!PublicKey(identity).is_sound());
    /// ```
    pub fn is_sound(&self) -> bool {
        super::check::sound_key(self)
    }

    /// Checks `signature` over `message` with this key, by the rule in `docs/protocol.md`
    /// ("Which signatures verify"): RFC 8032's cofactored equation, with canonical encodings
    /// and no small-order key or `R`. To check many signatures at once, see
    /// [`SignatureBatch`](super::SignatureBatch), which answers alike.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        let Some(key) = super::check::checked_key(self) else {
            return Err(CoreError::InvalidSignature(format!(
                "{self} is not a usable key (not a canonical curve point, or of small order)"
            )));
        };
        if super::check::verify_checked(&key, message, signature) {
            Ok(())
        } else {
            Err(CoreError::InvalidSignature(
                "the signature does not verify".into(),
            ))
        }
    }
}

/// A device's (or the authority's) Ed25519 signing key. It never leaves the device that made
/// it: it has no `Serialize`, and its `Debug` shows only the public half.
///
/// The core draws no randomness: the caller makes the 32-byte seed from the operating
/// system's random source.
///
/// ```
/// use mesh_core::trust::SecretKey;
/// let key = SecretKey::from_seed([7; 32]);
/// let sig = key.sign(b"hello");
/// key.public().verify(b"hello", &sig).unwrap();
/// assert!(key.public().verify(b"hellO", &sig).is_err());
/// ```
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key whose seed (RFC 8032 secret key) is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for the device's own store.
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` (Ed25519 signatures are deterministic: the same key and message give
    /// the same signature on every replica).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.public() == other.public()
    }
}

impl Eq for SecretKey {}

/// Appends the canonical encoding of a byte string: its length as a big-endian `u32`, then
/// the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Ids are at most 256 bytes and feed keys a few hundred; content is digested first.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Checks that `signer` is the `pinned` authority and that it signed `bytes` with `sig`; `what`
/// names the signed statement in the errors (`untrusted_certificate` either way).
pub(crate) fn check_authority(
    pinned: &PublicKey,
    signer: &PublicKey,
    bytes: &[u8],
    sig: &Signature,
    what: impl Fn() -> String,
) -> Result<()> {
    if signer != pinned {
        return Err(CoreError::UntrustedCertificate(format!(
            "{} was signed by another authority ({signer})",
            what()
        )));
    }
    pinned.verify(bytes, sig).map_err(|_| {
        CoreError::UntrustedCertificate(format!(
            "the authority's signature on {} does not verify",
            what()
        ))
    })
}
