//! Peer events on loopback: a listener reports each authenticated peer arriving and leaving.

use std::time::Duration;

use futures::StreamExt;
use mesh_client::peer::PeerTransport;
use mesh_client::prelude::*;
use mesh_client::store::StoreConfig;
use mesh_client::transport::InProcessHub;

use crate::common::builder;

/// The next peer event on `events`, within 10 s.
async fn next_peer_event(events: &mut futures::stream::BoxStream<'static, Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(e @ (Event::PeerConnected { .. } | Event::PeerLeft { .. })) => return e,
                Some(_) => continue,
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("a peer event within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_reports_peers_connecting_and_leaving() {
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
    let listener = laptop
        .listen_peers(
            "127.0.0.1:0".parse().unwrap(),
            laptop.peer_config(&hub_id).await.unwrap().unwrap(),
        )
        .await
        .unwrap();
    let mut events = laptop.events();

    // A connection that never authenticates is no peer: nothing is reported for it.
    drop(
        tokio::net::TcpStream::connect(listener.local_addr())
            .await
            .unwrap(),
    );

    let to_laptop = PeerTransport::new(
        listener.local_addr(),
        phone.peer_config(&hub_id).await.unwrap().unwrap(),
    )
    .unwrap();
    let from = match next_peer_event_after(&to_laptop, &mut events).await {
        Event::PeerConnected { user, device, addr } => {
            assert_eq!((user.as_str(), device.as_str()), ("ann", "phone"));
            assert!(addr.ip().is_loopback());
            addr
        }
        other => panic!("{other:?}"),
    };
    // The phone goes away: its connection closes, and the laptop says so.
    drop(to_laptop);
    match next_peer_event(&mut events).await {
        Event::PeerLeft { user, device, addr } => {
            assert_eq!(
                (user.as_str(), device.as_str(), addr),
                ("ann", "phone", from)
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Connects `t` to the laptop and returns the first peer event the laptop reports.
async fn next_peer_event_after(
    t: &PeerTransport,
    events: &mut futures::stream::BoxStream<'static, Event>,
) -> Event {
    let peer = t.connect().await.unwrap();
    assert_eq!(peer.device.as_str(), "laptop");
    next_peer_event(events).await
}
