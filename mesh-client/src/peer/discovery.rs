//! Static discovery: each device publishes where it listens for peers in its own device
//! record (`mesh:<user>/devices`), which travels like any other entry, so the devices of one
//! user find each other after meeting the hub (or any peer) once.
//!
//! What a device reads back was written by another party and is hostile: a record counts only
//! if the device it describes wrote its current version itself, at most
//! [`MAX_PEER_ADDRESSES`] of its addresses are read, each at most [`MAX_ADDRESS_LEN`] bytes
//! and a parseable `ip:port` a peer could be reached at (no port 0, no unspecified, multicast
//! or broadcast address); anything else is skipped. An address is only a hint: the peer
//! handshake still proves who answers.

use std::net::{IpAddr, SocketAddr};

use mesh_core::id::{DeviceId, UserId};
use mesh_core::model::{Device, Entry, FeedKey};
use mesh_core::store::Store as _;
use mesh_core::CoreError;

use crate::error::{ClientError, Result};
use crate::MeshClient;

/// The most addresses a device publishes, and the most read from one device record.
pub const MAX_PEER_ADDRESSES: usize = 8;

/// The longest address text read from a device record, in bytes.
pub const MAX_ADDRESS_LEN: usize = 64;

/// The most device records read when listing peer addresses.
pub const MAX_DEVICE_RECORDS: usize = 1024;

/// Where another device of this user says it listens for peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    /// The device that published the address.
    pub device: DeviceId,
    /// The address to give a [`PeerTransport`](crate::peer::PeerTransport).
    pub addr: SocketAddr,
}

impl MeshClient {
    /// Publishes `addrs` as the addresses this device listens for peers on, in its own device
    /// record (replacing those published before; an empty slice withdraws them). Other devices
    /// of the user read them with [`peer_addresses`](Self::peer_addresses) once the record
    /// reached them. At most [`MAX_PEER_ADDRESSES`] addresses (`LimitExceeded` otherwise);
    /// each must be one a peer can connect to (`Config` for port 0 or an unspecified,
    /// multicast or broadcast address).
    pub async fn publish_peer_addresses(&self, addrs: &[SocketAddr]) -> Result<Device> {
        if addrs.len() > MAX_PEER_ADDRESSES {
            return Err(CoreError::LimitExceeded(format!(
                "{} peer addresses (at most {MAX_PEER_ADDRESSES})",
                addrs.len()
            ))
            .into());
        }
        if let Some(bad) = addrs.iter().find(|a| !reachable(a)) {
            return Err(ClientError::Config(format!(
                "{bad} is not an address a peer can connect to"
            )));
        }
        let mut device = self.own_device().await?;
        device.addresses = Vec::with_capacity(addrs.len());
        for a in addrs {
            let text = a.to_string();
            if !device.addresses.contains(&text) {
                device.addresses.push(text);
            }
        }
        self.upsert(
            FeedKey::devices(self.user()),
            self.device().as_str().parse()?,
            device.name.clone(),
            &device,
        )
        .await?;
        Ok(device)
    }

    /// The addresses the user's other devices published (see
    /// [`publish_peer_addresses`](Self::publish_peer_addresses)), as far as this device's
    /// replica knows them, validated (see the [module documentation](self)); this device's
    /// own are left out. In device-id order, each device's addresses in its order.
    pub async fn peer_addresses(&self) -> Result<Vec<PeerAddress>> {
        let feed = FeedKey::devices(self.user());
        let entries = self
            .read(move |r| r.store().list(&feed, None, MAX_DEVICE_RECORDS))
            .await?;
        let mut out = Vec::new();
        for e in &entries {
            let Some((device, addrs)) = addresses_in(e, self.user()) else {
                continue;
            };
            if &device == self.device() {
                continue;
            }
            out.extend(addrs.into_iter().map(|addr| PeerAddress {
                device: device.clone(),
                addr,
            }));
        }
        Ok(out)
    }
}

/// The device a record of `user`'s devices feed describes and the valid addresses in it, or
/// `None` when the record does not count (deleted, malformed, another user's, or last written
/// by another device than the one it describes).
fn addresses_in(entry: &Entry, user: &UserId) -> Option<(DeviceId, Vec<SocketAddr>)> {
    if entry.is_deleted() {
        return None;
    }
    let device: DeviceId = entry.id().as_str().parse().ok()?;
    // Only the device itself says where it listens.
    if entry.sync.topmost()?.by.as_ref() != Some(&device) {
        return None;
    }
    let record: serde_json::Value = entry.content.content.decode().ok()?;
    let field = |name: &str| record.get(name).and_then(serde_json::Value::as_str);
    if field("id") != Some(device.as_str()) || field("owner") != Some(user.as_str()) {
        return None;
    }
    let listed = record.get("addresses")?.as_array()?;
    let mut addrs = Vec::new();
    for text in listed.iter().take(MAX_PEER_ADDRESSES) {
        let Some(text) = text.as_str().filter(|t| t.len() <= MAX_ADDRESS_LEN) else {
            continue;
        };
        match text.parse::<SocketAddr>() {
            Ok(a) if reachable(&a) && !addrs.contains(&a) => addrs.push(a),
            _ => {}
        }
    }
    Some((device, addrs))
}

/// Whether a peer could connect to `addr`: a port, and one host (not every host, a group or
/// a broadcast).
pub(crate) fn reachable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::model::EntryDraft;
    use mesh_core::replica::{Actor, Replica};
    use mesh_core::store::MemoryStore;
    use mesh_core::time::Timestamp;
    use serde_json::json;

    fn ann() -> UserId {
        "ann".parse().unwrap()
    }

    /// The record `content` under id `id`, last written by `writer`.
    fn record(id: &str, writer: &str, content: serde_json::Value) -> Entry {
        let mut r = Replica::new(MemoryStore::new("reader".parse().unwrap()));
        let actor = Actor::new(ann(), writer.parse().unwrap());
        let when = Timestamp::from_unix(1_800_000_000).unwrap();
        r.create(
            &FeedKey::devices(&ann()),
            id.parse().unwrap(),
            EntryDraft::new(id, content),
            &actor,
            when,
        )
        .unwrap()
        .entry
    }

    fn device(id: &str, addresses: serde_json::Value) -> serde_json::Value {
        json!({"id": id, "owner": "ann", "name": id, "kind": "laptop", "addresses": addresses})
    }

    fn found(e: &Entry) -> Option<Vec<String>> {
        addresses_in(e, &ann()).map(|(_, a)| a.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_devices_own_record_gives_its_addresses() {
        let e = record(
            "laptop",
            "laptop",
            device("laptop", json!(["127.0.0.1:7400", "[::1]:7401"])),
        );
        let (d, a) = addresses_in(&e, &ann()).unwrap();
        assert_eq!(d.as_str(), "laptop");
        assert_eq!(
            a,
            vec![
                "127.0.0.1:7400".parse::<SocketAddr>().unwrap(),
                "[::1]:7401".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_record_written_by_another_device_or_for_another_user_counts_for_nothing() {
        let good = device("laptop", json!(["127.0.0.1:7400"]));
        // Another device of the user wrote the laptop's record.
        assert_eq!(found(&record("laptop", "phone", good.clone())), None);
        // The record names another device or another owner than its key and feed.
        let mut other = good.clone();
        other["id"] = json!("phone");
        assert_eq!(found(&record("laptop", "laptop", other)), None);
        let mut owner = good;
        owner["owner"] = json!("bob");
        assert_eq!(found(&record("laptop", "laptop", owner)), None);
        // Not an object with a list of addresses.
        for junk in [
            json!("127.0.0.1:7400"),
            json!([1, 2]),
            device("laptop", json!("127.0.0.1:7400")),
            device("laptop", json!({"a": "127.0.0.1:7400"})),
        ] {
            assert_eq!(
                found(&record("laptop", "laptop", junk.clone())),
                None,
                "{junk}"
            );
        }
    }

    #[test]
    fn only_valid_addresses_are_read_and_no_more_than_the_cap() {
        let long = format!("127.0.0.1:{}", "1".repeat(MAX_ADDRESS_LEN));
        let e = record(
            "laptop",
            "laptop",
            device(
                "laptop",
                json!([
                    "127.0.0.1:0",
                    "0.0.0.0:7400",
                    "[::]:7400",
                    "224.0.0.251:5353",
                    "255.255.255.255:7400",
                    "laptop.local:7400",
                    "127.0.0.1",
                    long,
                    7400,
                    null,
                    "127.0.0.1:7400",
                    "127.0.0.1:7400",
                ]),
            ),
        );
        // The first eight entries are all invalid: the valid ones after the cap are not read.
        assert_eq!(found(&e), Some(vec![]));
        let many: Vec<String> = (0..3 * MAX_PEER_ADDRESSES)
            .map(|i| format!("127.0.0.1:{}", 7000 + i))
            .collect();
        let e = record("laptop", "laptop", device("laptop", json!(many)));
        assert_eq!(found(&e), Some(many[..MAX_PEER_ADDRESSES].to_vec()));
        // Duplicates count once.
        let e = record(
            "laptop",
            "laptop",
            device("laptop", json!(["127.0.0.1:7400", "127.0.0.1:7400"])),
        );
        assert_eq!(found(&e), Some(vec!["127.0.0.1:7400".to_owned()]));
    }
}
