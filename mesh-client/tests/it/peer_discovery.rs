//! Static discovery on loopback: a listening device publishes its address in its device
//! record, and another device of the user finds it there after meeting the hub, then meets it.

use std::net::SocketAddr;

use mesh_client::peer::discovery::MAX_PEER_ADDRESSES;
use mesh_client::peer::{PeerAddress, PeerTransport};
use mesh_client::prelude::*;
use mesh_client::store::StoreConfig;
use mesh_client::transport::InProcessHub;

use crate::common::builder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_finds_where_another_listens_in_its_device_record() {
    let hub = InProcessHub::new();
    let dir = tempfile::tempdir().unwrap();
    let open = |device: &str| {
        builder("ann", device)
            .store(StoreConfig::Sqlite(dir.path().join(format!("{device}.db"))))
            .sync_options(SyncOptions::default().with_auto(false))
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .build()
    };
    let (laptop, phone) = (open("laptop").await.unwrap(), open("phone").await.unwrap());
    let hub_id: RemoteId = "hub".parse().unwrap();
    laptop.sync_now().await.unwrap();
    phone.sync_now().await.unwrap();
    assert_eq!(phone.peer_addresses().await.unwrap(), vec![]);

    // The laptop listens and says where, in its own record.
    let config = laptop.peer_config(&hub_id).await.unwrap().unwrap();
    let listener = laptop
        .listen_peers("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let addr = listener.local_addr();
    let record = laptop.publish_peer_addresses(&[addr]).await.unwrap();
    assert_eq!(record.addresses, vec![addr.to_string()]);
    // A device does not list itself.
    assert_eq!(laptop.peer_addresses().await.unwrap(), vec![]);

    // Through the hub the record reaches the phone, which meets the laptop there.
    laptop.sync_now().await.unwrap();
    phone.sync_now().await.unwrap();
    let found = phone.peer_addresses().await.unwrap();
    assert_eq!(
        found,
        vec![PeerAddress {
            device: "laptop".parse().unwrap(),
            addr
        }]
    );
    let config = phone.peer_config(&hub_id).await.unwrap().unwrap();
    let peer = PeerTransport::new(found[0].addr, config)
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(peer.device.as_str(), "laptop");

    // Withdrawn: the phone finds nothing once the empty list reaches it; the rest of the
    // record stays.
    laptop.publish_peer_addresses(&[]).await.unwrap();
    laptop.sync_now().await.unwrap();
    phone.sync_now().await.unwrap();
    assert_eq!(phone.peer_addresses().await.unwrap(), vec![]);
    let devices = phone.devices().await.unwrap();
    assert!(
        devices.iter().any(|d| d.id.as_str() == "laptop"),
        "{devices:?}"
    );
}

#[tokio::test]
async fn a_device_publishes_only_addresses_a_peer_can_reach() {
    let laptop = builder("ann", "laptop").build().await.unwrap();
    for bad in [
        "127.0.0.1:0",
        "0.0.0.0:7400",
        "[::]:7400",
        "224.0.0.251:5353",
    ] {
        let a: SocketAddr = bad.parse().unwrap();
        let e = laptop.publish_peer_addresses(&[a]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
    }
    let many: Vec<SocketAddr> = (0..=MAX_PEER_ADDRESSES as u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i)))
        .collect();
    assert!(laptop.publish_peer_addresses(&many).await.is_err());
    // Nothing was written by the refused calls; a good list is.
    let me = |c: Vec<Device>| c.into_iter().find(|d| d.id.as_str() == "laptop").unwrap();
    assert!(me(laptop.devices().await.unwrap()).addresses.is_empty());
    laptop
        .publish_peer_addresses(&many[..MAX_PEER_ADDRESSES])
        .await
        .unwrap();
    assert_eq!(
        me(laptop.devices().await.unwrap()).addresses.len(),
        MAX_PEER_ADDRESSES
    );
}
