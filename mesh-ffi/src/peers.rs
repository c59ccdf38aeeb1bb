//! Peers over the C ABI: listening for the user's other devices, syncing with a peer, and the
//! addresses devices publish. A device meets peers with the certificate its hub issued, so
//! each call names the hub remote whose enrollment it uses.

use std::ffi::c_char;
use std::net::SocketAddr;

use std::net::Ipv4Addr;
use std::time::Duration;

use ::mesh_client::peer::{MdnsConfig, PeerConfig, PeerError, PeerTransport};
use mesh_core::id::RemoteId;
use serde_json::json;

use crate::args::{id_arg, json_arg, opt_str_arg, str_arg, Out};
use crate::client::{mesh_client, with_client};
use crate::error::{mesh_error, mesh_status, Error, Result};

fn addr_arg(p: *const c_char, name: &str) -> Result<SocketAddr> {
    parse_addr(str_arg(p, name)?, name)
}

fn parse_addr(s: &str, name: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        Error::new(
            mesh_status::MESH_STATUS_INVALID_INPUT,
            format!("{name} {s:?} is not an ip:port address"),
        )
    })
}

fn peer_error(e: PeerError) -> Error {
    let status = match e.code() {
        "offline" => mesh_status::MESH_STATUS_OFFLINE,
        "timeout" => mesh_status::MESH_STATUS_TIMEOUT,
        "untrusted_certificate" | "expired_certificate" => mesh_status::MESH_STATUS_UNAUTHORIZED,
        "revoked" => mesh_status::MESH_STATUS_REVOKED,
        "protocol" | "payload_too_large" => mesh_status::MESH_STATUS_PROTOCOL,
        "config" => mesh_status::MESH_STATUS_INVALID_INPUT,
        _ => mesh_status::MESH_STATUS_TRANSPORT,
    };
    Error::new(status, e.to_string())
}

/// This device's peer configuration from its enrollment with `hub`.
fn config(c: &mesh_client, hub: &RemoteId) -> Result<PeerConfig> {
    c.run(c.client.peer_config(hub))?.ok_or_else(|| {
        Error::new(
            mesh_status::MESH_STATUS_NOT_FOUND,
            format!(
                "no enrollment with {hub}: a device meets peers once it synced with its hub \
                 on a store that keeps enrollments (store_path)"
            ),
        )
    })
}

/// Listens for the peers of this device's mesh on `addr` (`"127.0.0.1:0"`: a free port on
/// loopback), with the certificate the hub remote `hub` issued to this device, and serves
/// them through the same access rules as the hub. The address it listens on goes to
/// `*listening_addr` (a plain string; may be NULL). The listener lives until the client is
/// closed; peers that connect are reported as `peer_connected` / `peer_left` events.
///
/// `MESH_STATUS_NOT_FOUND` when the device is not enrolled with `hub` yet;
/// `MESH_STATUS_OFFLINE` when the address cannot be bound.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_listen_peers(
    client: *const mesh_client,
    addr: *const c_char,
    hub: *const c_char,
    listening_addr: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let addr = addr_arg(addr, "addr")?;
        let hub: RemoteId = id_arg(hub, "hub")?;
        let config = config(c, &hub)?;
        let listener = c
            .run(c.client.listen_peers(addr, config))
            .map_err(peer_error)?;
        let bound = listener.local_addr();
        c.keep_listener(listener)?;
        if !listening_addr.is_null() {
            Out::new(listening_addr, "listening_addr")?.write_string(bound.to_string());
        }
        Ok(())
    })
}

/// Starts syncing with the peer listening at `addr` as the remote `name`, authenticating with
/// the certificate the hub remote `hub` issued to this device. What the peer sends is held to
/// the same rules as a push to the hub (refusals are `rejected` events). The peer appears in
/// `mesh_client_status` beside the hub.
///
/// `MESH_STATUS_CONFLICT` when a remote of that name is already syncing;
/// `MESH_STATUS_INVALID_INPUT` past 64 remotes; `MESH_STATUS_NOT_FOUND` when the device is
/// not enrolled with `hub`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_add_peer(
    client: *const mesh_client,
    name: *const c_char,
    addr: *const c_char,
    hub: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let name: RemoteId = id_arg(name, "name")?;
        let addr = addr_arg(addr, "addr")?;
        let hub: RemoteId = id_arg(hub, "hub")?;
        let transport = PeerTransport::new(addr, config(c, &hub)?).map_err(peer_error)?;
        // The engine starts on the client's runtime.
        let _rt = c.runtime().enter();
        c.client.add_remote(name, transport)?;
        Ok(())
    })
}

/// Stops syncing with the remote `name` (a peer that left); its cursors stay for when it
/// comes back. `MESH_STATUS_NOT_FOUND` when no remote of that name is syncing.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_remove_peer(
    client: *const mesh_client,
    name: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let name: RemoteId = id_arg(name, "name")?;
        if c.client.remove_remote(&name) {
            Ok(())
        } else {
            Err(Error::new(
                mesh_status::MESH_STATUS_NOT_FOUND,
                format!("no remote {name} is syncing"),
            ))
        }
    })
}

/// Publishes where this device listens for peers (a JSON array of `"ip:port"` strings, at most
/// 8; `[]` withdraws them) in its own device record, so that the user's other devices find it
/// after their next sync.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_publish_peer_addresses(
    client: *const mesh_client,
    addrs_json: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let addrs: Vec<SocketAddr> = crate::args::json_arg(addrs_json, "addrs_json")?;
        c.run(c.client.publish_peer_addresses(&addrs))?;
        Ok(())
    })
}

/// The addresses the user's other devices published, as a JSON array of
/// `{"device": "...", "addr": "ip:port"}`, into `*addresses_json`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_peer_addresses(
    client: *const mesh_client,
    addresses_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let out = Out::new(addresses_json, "addresses_json")?;
        let list: Vec<_> = c
            .run(c.client.peer_addresses())?
            .into_iter()
            .map(|a| json!({"device": a.device, "addr": a.addr.to_string()}))
            .collect();
        out.write_json(&list)
    })
}

/// Where mDNS discovery runs, as `mesh_client_discover_peers` reads it from JSON.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MdnsJson {
    interfaces: Vec<Ipv4Addr>,
    port: u16,
    #[serde(default)]
    multicast_ttl: Option<u32>,
    #[serde(default)]
    query_interval_ms: Option<u64>,
    #[serde(default)]
    record_ttl_ms: Option<u64>,
}

impl From<MdnsJson> for MdnsConfig {
    fn from(j: MdnsJson) -> Self {
        let mut c = MdnsConfig::new(j.interfaces);
        c.port = j.port;
        if let Some(t) = j.multicast_ttl {
            c.multicast_ttl = t;
        }
        if let Some(ms) = j.query_interval_ms {
            c.query_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = j.record_ttl_ms {
            c.record_ttl = Duration::from_millis(ms);
        }
        c
    }
}

/// Finds peers on the local network by mDNS and syncs with each that proves, at the
/// handshake, to be the device it announced (as the remote `lan:<device>`; reported as
/// `peer_discovered` / `peer_lost` events). `mdns_json` names the interfaces, and nothing is
/// sent or joined on any other: `{"interfaces": ["127.0.0.1"], "port": 5353}`, optionally
/// with `multicast_ttl` (1 to 255, default 255), `query_interval_ms` and `record_ttl_ms`.
/// `listening_addr` (may be NULL) is where this device listens for peers
/// (`mesh_client_listen_peers`): with it, the device is announced too. Credentials come from
/// the enrollment with the hub remote `hub`. Discovery runs until the client is closed (at
/// most 4 at once).
///
/// `MESH_STATUS_INVALID_INPUT` for a configuration that cannot be used (no interface, an
/// unspecified or multicast address, an IPv6 listening address); `MESH_STATUS_OFFLINE` when a
/// socket cannot be opened; `MESH_STATUS_NOT_FOUND` when the device is not enrolled with `hub`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_discover_peers(
    client: *const mesh_client,
    mdns_json: *const c_char,
    listening_addr: *const c_char,
    hub: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let mdns: MdnsJson = json_arg(mdns_json, "mdns_json")?;
        let listening = opt_str_arg(listening_addr, "listening_addr")?
            .map(|s| parse_addr(s, "listening_addr"))
            .transpose()?;
        let hub: RemoteId = id_arg(hub, "hub")?;
        let config = config(c, &hub)?;
        let discovery = c
            .run(c.client.discover_peers(mdns.into(), listening, config))
            .map_err(peer_error)?;
        c.keep_discovery(discovery)
    })
}
