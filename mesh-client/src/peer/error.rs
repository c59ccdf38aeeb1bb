//! Why a peer connection failed.

use crate::transport::TransportError;

/// Why a peer connection or handshake failed. Every variant has a stable
/// [`code`](PeerError::code), the one sent to a refused peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The network failed (connection refused, reset, closed early).
    #[error("peer connection failed: {0}")]
    Io(String),
    /// The TLS layer failed.
    #[error("peer TLS failed: {0}")]
    Tls(String),
    /// The peer did not finish in time (handshake, frame or answer).
    #[error("the peer did not answer in time")]
    Timeout,
    /// The peer sent bytes that are not the peer protocol.
    #[error("peer protocol: {0}")]
    Protocol(String),
    /// A frame longer than the limit was announced.
    #[error("a peer frame of {len} bytes is over the limit of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The peer's certificate was not issued by the pinned authority, does not verify, or its
    /// key did not sign this connection's handshake.
    #[error("untrusted peer: {0}")]
    Untrusted(String),
    /// The peer's certificate is outside its validity period.
    #[error("the peer's certificate is expired or not yet valid: {0}")]
    Expired(String),
    /// The peer's device is revoked.
    #[error("the peer's device {0} is revoked")]
    Revoked(String),
    /// A configuration that cannot be used (an mDNS interface or announcement, say).
    #[error("peer configuration: {0}")]
    Config(String),
    /// The other side refused this device at the handshake, with its code.
    #[error("the peer refused this device ({code}): {message}")]
    Refused {
        /// The peer's stable code (one of [`PeerError::code`]'s).
        code: String,
        /// Its explanation.
        message: String,
    },
}

impl PeerError {
    /// The stable code: `offline`, `tls`, `timeout`, `protocol`, `payload_too_large`,
    /// `untrusted_certificate`, `expired_certificate`, `revoked`, `config`, or the peer's code for
    /// [`PeerError::Refused`].
    pub fn code(&self) -> &str {
        match self {
            PeerError::Io(_) => "offline",
            PeerError::Tls(_) => "tls",
            PeerError::Timeout => "timeout",
            PeerError::Protocol(_) => "protocol",
            PeerError::FrameTooLarge { .. } => "payload_too_large",
            PeerError::Untrusted(_) => "untrusted_certificate",
            PeerError::Expired(_) => "expired_certificate",
            PeerError::Revoked(_) => "revoked",
            PeerError::Config(_) => "config",
            PeerError::Refused { code, .. } => code,
        }
    }
}

impl From<std::io::Error> for PeerError {
    fn from(e: std::io::Error) -> Self {
        PeerError::Io(e.to_string())
    }
}

impl From<PeerError> for TransportError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Io(m) | PeerError::Tls(m) => TransportError::Offline(m),
            PeerError::Timeout => TransportError::Timeout,
            PeerError::Protocol(m) | PeerError::Config(m) => TransportError::Protocol(m),
            e @ PeerError::FrameTooLarge { .. } => TransportError::Protocol(e.to_string()),
            e @ (PeerError::Untrusted(_) | PeerError::Expired(_) | PeerError::Revoked(_)) => {
                TransportError::Refused {
                    code: e.code().to_string(),
                    message: e.to_string(),
                }
            }
            PeerError::Refused { code, message } => TransportError::Refused { code, message },
        }
    }
}
