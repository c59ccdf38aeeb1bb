//! The peer handshake: each side proves, inside the TLS connection, which device of which
//! user it is.
//!
//! The connecting side sends `hello` (its certificate and its device key's signature over
//! [`signing_bytes`] with role `C`); the listening side checks it and answers either
//! `refused` (a code and a message, then it closes) or its own `hello` (role `L`), which the
//! connecting side checks the same way. Both signatures cover the connection's TLS exporter
//! secret: a proof cannot be replayed on another connection or relayed by a machine in the
//! middle (which would hold two connections with two different secrets).

use std::time::Duration;

use mesh_core::id::{DeviceId, UserId};
use mesh_core::time::Timestamp;
use mesh_core::trust::{DeviceCertificate, Signature};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::peer::frame::{self, MAX_HANDSHAKE_FRAME};
use crate::peer::tls::EXPORTER_LEN;
use crate::peer::{PeerConfig, PeerError, PeerTrust};
use crate::transport::serve::lock_ring;

/// The domain tag that starts every handshake signature.
pub const HELLO_TAG: &[u8] = b"mesh-peer-hello-v1\0";

/// The protocol version this build speaks.
pub const PEER_PROTOCOL_VERSION: u32 = 1;

/// Which side of the connection signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The side that connected (`C`).
    Connecting,
    /// The side that accepted (`L`).
    Listening,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Connecting => b'C',
            Role::Listening => b'L',
        }
    }
}

/// Who the other side of a peer connection proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's user.
    pub user: UserId,
    /// The peer's device.
    pub device: DeviceId,
    /// The certificate it presented (verified).
    pub certificate: DeviceCertificate,
}

/// A handshake message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Handshake {
    Hello {
        version: u32,
        certificate: DeviceCertificate,
        signature: Signature,
    },
    Refused {
        code: String,
        message: String,
    },
}

/// The bytes a side signs: [`HELLO_TAG`], its role byte (`C` or `L`), and the connection's
/// 32-byte exporter secret.
pub(crate) fn signing_bytes(role: Role, exporter: &[u8; EXPORTER_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_TAG.len() + 1 + EXPORTER_LEN);
    out.extend_from_slice(HELLO_TAG);
    out.push(role.byte());
    out.extend_from_slice(exporter);
    out
}

fn hello(config: &PeerConfig, role: Role, exporter: &[u8; EXPORTER_LEN]) -> Handshake {
    let creds = &config.credentials;
    Handshake::Hello {
        version: PEER_PROTOCOL_VERSION,
        certificate: creds.certificate.clone(),
        signature: creds.key.sign(&signing_bytes(role, exporter)),
    }
}

pub(crate) fn system_now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_unix(secs).unwrap_or(Timestamp::EPOCH)
}

/// Checks a peer's hello: the certificate against the pinned authority, its validity at
/// `now`, the revocations `trust` knows, and the signature over this connection. A peer that
/// passes is recorded in `trust` (the guard then verifies the versions it signs).
pub(crate) fn check(
    trust: &PeerTrust,
    certificate: &DeviceCertificate,
    signature: &Signature,
    role: Role,
    exporter: &[u8; EXPORTER_LEN],
    now: Timestamp,
    skew: Duration,
) -> Result<PeerIdentity, PeerError> {
    let mut ring = lock_ring(trust.keyring());
    let c = certificate;
    c.verify(ring.authority())
        .map_err(|e| PeerError::Untrusted(e.to_string()))?;
    if now > c.not_after {
        return Err(PeerError::Expired(format!(
            "the certificate of device {} ended at {}",
            c.device, c.not_after
        )));
    }
    if now.plus_secs(skew.as_secs() as i64) < c.not_before {
        return Err(PeerError::Expired(format!(
            "the certificate of device {} starts at {}",
            c.device, c.not_before
        )));
    }
    // Revoked before or after its certificate reached this keyring alike.
    if ring.revoked_at(&c.device).is_some_and(|at| at <= now) {
        return Err(PeerError::Revoked(c.device.to_string()));
    }
    if let Some(known) = ring.device(&c.device) {
        if known.certificate.key != c.key || known.certificate.user != c.user {
            return Err(PeerError::Untrusted(format!(
                "device {} is known with another user or key",
                c.device
            )));
        }
    }
    c.key
        .verify(&signing_bytes(role, exporter), signature)
        .map_err(|_| {
            PeerError::Untrusted(format!(
                "the key of device {} did not sign this connection",
                c.device
            ))
        })?;
    ring.add(c.clone())
        .map_err(|e| PeerError::Untrusted(e.to_string()))?;
    Ok(PeerIdentity {
        user: c.user.clone(),
        device: c.device.clone(),
        certificate: c.clone(),
    })
}

async fn read_hello<S>(s: &mut S, config: &PeerConfig) -> Result<Handshake, PeerError>
where
    S: AsyncRead + Unpin,
{
    let t = config.handshake_timeout;
    match frame::read::<_, Handshake>(s, MAX_HANDSHAKE_FRAME, Some(t), t).await? {
        Some((h, body)) if body.is_empty() => Ok(h),
        Some(_) => Err(PeerError::Protocol("a handshake frame with a body".into())),
        None => Err(PeerError::Io("the peer closed the connection".into())),
    }
}

/// The connecting side's handshake.
pub(crate) async fn connecting<S>(
    s: &mut S,
    config: &PeerConfig,
    exporter: &[u8; EXPORTER_LEN],
) -> Result<PeerIdentity, PeerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    frame::write(s, &hello(config, Role::Connecting, exporter), &[]).await?;
    match read_hello(s, config).await? {
        Handshake::Refused { code, message } => Err(PeerError::Refused { code, message }),
        Handshake::Hello {
            version,
            certificate,
            signature,
        } => {
            if version != PEER_PROTOCOL_VERSION {
                return Err(PeerError::Protocol(format!(
                    "the peer speaks version {version}"
                )));
            }
            check(
                &config.trust,
                &certificate,
                &signature,
                Role::Listening,
                exporter,
                system_now(),
                config.clock_skew,
            )
        }
    }
}

/// The listening side's handshake: a refused peer is told why before the connection closes.
pub(crate) async fn listening<S>(
    s: &mut S,
    config: &PeerConfig,
    exporter: &[u8; EXPORTER_LEN],
) -> Result<PeerIdentity, PeerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let checked = match read_hello(s, config).await? {
        Handshake::Hello {
            version,
            certificate,
            signature,
        } => {
            if version != PEER_PROTOCOL_VERSION {
                Err(PeerError::Protocol(format!(
                    "this peer speaks version {PEER_PROTOCOL_VERSION}, not {version}"
                )))
            } else {
                check(
                    &config.trust,
                    &certificate,
                    &signature,
                    Role::Connecting,
                    exporter,
                    system_now(),
                    config.clock_skew,
                )
            }
        }
        Handshake::Refused { .. } => Err(PeerError::Protocol("a refusal before hello".into())),
    };
    match checked {
        Ok(identity) => {
            frame::write(s, &hello(config, Role::Listening, exporter), &[]).await?;
            Ok(identity)
        }
        Err(e) => {
            let refusal = Handshake::Refused {
                code: e.code().to_string(),
                message: e.to_string(),
            };
            // Best effort: the peer may already be gone.
            let _ = frame::write(s, &refusal, &[]).await;
            Err(e)
        }
    }
}
