//! Trust: device keys, device certificates, signed versions and their verification.
//!
//! Every device signs the history items it writes with its own Ed25519 key
//! ([`SecretKey`]); the mesh's authority (the hub) certifies which user a device key belongs
//! to ([`DeviceCertificate`]). A replica that takes data from a party it does not trust checks
//! every history item it does not already hold ([`verify_entry`]) and authorizes each version
//! against the role of the user whose device signed it ([`signer_of`]), never against the
//! pusher's: a relay needs only read access. The guard (`sync::guard`) applies these rules for
//! the hub, in-process hubs and peers alike.
//!
//! The byte encodings are specified in `docs/protocol.md` ("Signed versions") and below, so
//! that another implementation can produce and check them.

mod cert;
mod check;
mod keyring;
mod keys;
mod revocation;
mod seal;
mod verify;

pub use cert::{DeviceCertificate, Enrollment, CERT_TAG};
pub use check::SignatureBatch;
pub use keyring::{CertifiedDevice, KeyStatus, Keyring, MemoryKeyring, NoKeyring, Signer};
pub use keys::{Digest, PublicKey, SecretKey, Signature};
pub use revocation::{
    Revocation, MAX_CERTIFICATES_PER_ANSWER, MAX_REVOCATIONS_PER_ANSWER, REVOCATION_TAG,
};
pub use seal::{data_digest, seal_version, signing_bytes, Seal, DATA_TAG, VERSION_TAG};
pub(crate) use verify::verify_entries_with;
pub use verify::{
    check_signatures, signer_of, signer_of_meta, verify_entries, verify_entry, Checked,
};
