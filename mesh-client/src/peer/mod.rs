//! Peers: devices that sync with each other directly, with no hub in between.
//!
//! A device listens for peers with a [`PeerListener`] (see [`MeshClient::listen_peers`]) and
//! connects to one with a [`PeerTransport`], an ordinary [`Transport`] that a client is given
//! as a remote. Both sides authenticate each other by their mesh device certificates:
//!
//! 1. a TLS 1.3 connection with an ephemeral self-signed X.509 certificate (encryption only:
//!    nobody checks it);
//! 2. a handshake inside it: each side sends its [`DeviceCertificate`] and an Ed25519
//!    signature, by its device key, over the connection's TLS exporter secret (RFC 5705), so
//!    the proof is bound to this very connection and cannot be replayed or relayed. Each side
//!    checks the other's certificate against the mesh authority it pins (the only root), its
//!    validity period and the revocations its keyring knows;
//! 3. requests: the core's sync messages, blob objects and a notification stream, in
//!    length-prefixed frames with a size cap (see [`wire`]).
//!
//! Devices find each other by the addresses each publishes in its own device record
//! ([`discovery`]: [`MeshClient::publish_peer_addresses`], [`MeshClient::peer_addresses`]),
//! and on the local network by mDNS on the interfaces the application names ([`mdns`];
//! [`MeshClient::discover_peers`] syncs with every device found that proves who it
//! announced).
//!
//! The listening side answers through the same access guard as a hub, as the authenticated
//! peer's user: a Reader's device cannot write through a peer. The wire format is specified in
//! `docs/protocol.md` ("Peer protocol").
//!
//! [`MeshClient::listen_peers`]: crate::MeshClient::listen_peers
//! [`MeshClient::publish_peer_addresses`]: crate::MeshClient::publish_peer_addresses
//! [`MeshClient::peer_addresses`]: crate::MeshClient::peer_addresses
//! [`MeshClient::discover_peers`]: crate::MeshClient::discover_peers
//! [`Transport`]: crate::transport::Transport
//! [`DeviceCertificate`]: mesh_core::trust::DeviceCertificate

mod config;
pub mod discovery;
mod error;
mod frame;
mod handshake;
mod listener;
pub mod mdns;
mod nearby;
mod registry;
mod tls;
mod transport;
pub mod wire;

pub use config::{PeerConfig, PeerCredentials, PeerTrust};
pub use discovery::PeerAddress;
pub use error::PeerError;
pub use handshake::{PeerIdentity, HELLO_TAG, PEER_PROTOCOL_VERSION};
pub use listener::PeerListener;
pub use mdns::{DiscoveredPeer, MdnsAnnouncement, MdnsConfig, MdnsDiscovery};
pub use nearby::{PeerDiscovery, MAX_NEARBY_REMOTES};
pub(crate) use registry::TrustRegistry;
pub use tls::EXPORTER_LABEL;
pub use transport::PeerTransport;
