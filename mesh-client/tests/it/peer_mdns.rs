//! Discovery by mDNS, restricted to the loopback interface and to a port of the test's own:
//! a device finds another, proves who it is, syncs with it while the hub is away, and drops
//! it when it says goodbye. An announcement that lies about its device is not synced with.

use std::net::UdpSocket;
use std::time::Duration;

use mesh_client::peer::{MdnsAnnouncement, MdnsConfig, MdnsDiscovery, PeerConfig};
use mesh_client::prelude::*;
use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork};
use tokio::sync::watch;

use crate::peer::{next_event, notes_folder};
use crate::peer_mesh::{device, listen, sync, titles};

/// A UDP port free on loopback right now, for this test's mDNS group alone.
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Waits (10 s at most) until `rx` holds a value `ok` accepts.
async fn until<T: Clone>(rx: &mut watch::Receiver<T>, ok: impl Fn(&T) -> bool) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| ok(v)))
        .await
        .expect("not within 10 s")
        .expect("the sender is gone")
        .clone()
}

async fn peer_config(c: &MeshClient) -> PeerConfig {
    c.peer_config(&"hub".parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_on_loopback_finds_a_peer_that_proves_who_it_is_and_syncs_with_it() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (laptop, laptop_link) = device(&hub, &net, dir.path(), "laptop").await;
    let (phone, phone_link) = device(&hub, &net, dir.path(), "phone").await;
    for c in [&laptop, &phone] {
        c.sync_now().await.unwrap();
    }
    let mdns = MdnsConfig::loopback(free_port());
    let mut events = phone.events();
    let phone_finds = phone
        .discover_peers(mdns.clone(), None, peer_config(&phone).await)
        .await
        .unwrap();

    // A liar announces the laptop's listener as the device "tablet".
    let listener = listen(&laptop).await;
    let liar = MdnsDiscovery::start(
        mdns.clone(),
        Some(MdnsAnnouncement {
            user: "ann".parse().unwrap(),
            device: "tablet".parse().unwrap(),
            addr: listener.local_addr(),
        }),
    )
    .await
    .unwrap();
    let heard = until(&mut phone_finds.subscribe_nearby(), |p| !p.is_empty()).await;
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].device.as_str(), "tablet");

    // The laptop announces itself: the phone finds it, and it alone proves who it said.
    let laptop_finds = laptop
        .discover_peers(
            mdns.clone(),
            Some(listener.local_addr()),
            peer_config(&laptop).await,
        )
        .await
        .unwrap();
    let remotes = until(&mut phone_finds.subscribe_remotes(), |r| !r.is_empty()).await;
    assert_eq!(
        remotes,
        vec!["lan:laptop".parse::<RemoteId>().unwrap()],
        "the liar's announcement proved another device and is not synced with"
    );
    let found = next_event(&mut events, |e| matches!(e, Event::PeerDiscovered { .. })).await;
    let Event::PeerDiscovered { device, addr, .. } = found else {
        unreachable!()
    };
    assert_eq!((device.as_str(), addr), ("laptop", listener.local_addr()));
    // The laptop heard the phone's queries but the phone does not announce: nothing to add.
    assert!(laptop_finds.remotes().is_empty());
    let status: Vec<String> = phone
        .status()
        .iter()
        .map(|s| s.remote.to_string())
        .collect();
    assert_eq!(status, ["hub", "lan:laptop"]);

    // With the hub away, a note the laptop writes reaches the phone through the discovered
    // peer.
    laptop_link.set_online(false);
    phone_link.set_online(false);
    let (folder, notes) = notes_folder(&laptop, "Trip").await;
    laptop
        .put(
            &folder,
            &notes,
            EntryDraft::new("found nearby", serde_json::json!({})),
        )
        .await
        .unwrap();
    sync(&phone).await;
    assert_eq!(titles(&phone, &folder, &notes).await, ["found nearby"]);

    // The laptop says goodbye: the phone drops it at once (no waiting for a time to live).
    laptop_finds.close().await;
    until(&mut phone_finds.subscribe_remotes(), |r| r.is_empty()).await;
    next_event(&mut events, |e| matches!(e, Event::PeerLost { .. })).await;
    let status: Vec<String> = phone
        .status()
        .iter()
        .map(|s| s.remote.to_string())
        .collect();
    assert_eq!(status, ["hub"]);
    drop(liar);
}

#[tokio::test]
async fn a_configuration_beyond_loopback_rules_is_refused_before_any_socket() {
    let mut c = MdnsConfig::loopback(free_port());
    c.interfaces.clear();
    let e = MdnsDiscovery::start(c, None).await.unwrap_err();
    assert_eq!(e.code(), "config");
    let c = MdnsConfig::loopback(free_port());
    let e = MdnsDiscovery::start(
        c,
        Some(MdnsAnnouncement {
            user: "ann".parse().unwrap(),
            device: "laptop".parse().unwrap(),
            addr: "[::1]:4100".parse().unwrap(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "config");
}
