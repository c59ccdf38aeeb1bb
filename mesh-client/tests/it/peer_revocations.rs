//! Revocations travel with the data: a device revoked at the hub is refused by peers that
//! heard of it from the hub or from another peer, and a statement the authority did not sign
//! revokes nothing.

use mesh_client::peer::PeerTransport;
use mesh_client::prelude::*;
use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork};
use mesh_core::id::DeviceId;
use mesh_core::sync::{Request, Response};
use mesh_core::trust::{Revocation, SecretKey};

use crate::common::HubProxy;
use crate::peer::next_event;
use crate::peer_mesh::{add_peer, device, listen};

fn phone() -> DeviceId {
    "phone".parse().unwrap()
}

async fn hub_config(c: &MeshClient) -> mesh_client::peer::PeerConfig {
    c.peer_config(&"hub".parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// Whether the phone's next handshake with the device listening at `addr` is refused as
/// revoked (`false`: it is accepted).
async fn refuses_phone(phone: &MeshClient, addr: std::net::SocketAddr) -> bool {
    let to = PeerTransport::new(addr, hub_config(phone).await).unwrap();
    match to.connect().await {
        Ok(_) => false,
        Err(e) if e.code() == "revoked" => true,
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_travels_from_the_hub_through_peers_and_survives_a_restart() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (laptop, laptop_link) = device(&hub, &net, dir.path(), "laptop").await;
    let (phone_client, _) = device(&hub, &net, dir.path(), "phone").await;
    let (tablet, _) = device(&hub, &net, dir.path(), "tablet").await;
    for c in [&laptop, &phone_client, &tablet] {
        c.sync_now().await.unwrap();
    }
    let laptop_listens = listen(&laptop).await;
    let tablet_listens = listen(&tablet).await;
    // Before the revocation the phone meets both.
    assert!(!refuses_phone(&phone_client, laptop_listens.local_addr()).await);
    assert!(!refuses_phone(&phone_client, tablet_listens.local_addr()).await);
    // The phone syncs with the laptop over a connection that stays open.
    let phone_to_laptop =
        PeerTransport::new(laptop_listens.local_addr(), hub_config(&phone_client).await).unwrap();
    let feeds = || Request::Feeds {
        from: "phone".parse().unwrap(),
        only: None,
        certificates: false,
    };
    phone_to_laptop.send(feeds()).await.unwrap();

    // The phone is stolen; the hub revokes it. The laptop is away from the hub.
    laptop_link.set_online(false);
    hub.revoke_device(&phone());

    // The tablet hears of it at its next sync with the hub, says so, and refuses the phone.
    let mut events = tablet.events();
    tablet.sync_now().await.unwrap();
    let heard = next_event(&mut events, |e| matches!(e, Event::DeviceRevoked { .. })).await;
    assert!(
        matches!(&heard, Event::DeviceRevoked { user, device, .. }
            if user.as_str() == "ann" && *device == phone()),
        "{heard:?}"
    );
    assert!(refuses_phone(&phone_client, tablet_listens.local_addr()).await);
    // The laptop has not heard yet: it still takes the phone.
    assert!(!refuses_phone(&phone_client, laptop_listens.local_addr()).await);

    // The laptop syncs with the tablet as a peer (no hub in reach) and learns it from there:
    // the phone's new handshakes and its open connection are refused alike.
    add_peer(&laptop, "tablet", tablet_listens.local_addr()).await;
    let outcomes = laptop.sync_each().await.unwrap();
    let with_tablet = outcomes
        .iter()
        .find(|(r, _)| r.as_str() == "tablet")
        .unwrap();
    assert!(with_tablet.1.is_ok(), "{outcomes:?}");
    assert!(refuses_phone(&phone_client, laptop_listens.local_addr()).await);
    let cut = phone_to_laptop.send(feeds()).await;
    assert!(
        cut.is_err(),
        "an open connection outlived the relayed revocation: {cut:?}"
    );

    // The laptop keeps what it learned across a restart.
    laptop.close();
    drop((laptop, laptop_listens));
    let (laptop, _link) = device(&hub, &net, dir.path(), "laptop").await;
    let trust = hub_config(&laptop).await.trust;
    assert!(trust.is_revoked(
        &phone(),
        mesh_core::time::Timestamp::from_unix(4_000_000_000).unwrap()
    ));
    let again = listen(&laptop).await;
    assert!(refuses_phone(&phone_client, again.local_addr()).await);
}

/// Adds a revocation of the phone, signed by a key other than the hub's authority, to a
/// `feeds` answer.
fn forge(answer: &mut Response) {
    if let Response::Feeds { revocations, .. } = answer {
        let rogue = SecretKey::from_seed([66; 32]);
        let at = mesh_core::time::Timestamp::from_unix(0).unwrap();
        revocations.push(Revocation::issue(
            &rogue,
            "ann".parse().unwrap(),
            phone(),
            at,
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_the_authority_did_not_sign_revokes_nothing() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (phone_client, _) = device(&hub, &net, dir.path(), "phone").await;
    phone_client.sync_now().await.unwrap();
    let laptop = crate::common::builder("ann", "laptop")
        .store(mesh_client::store::StoreConfig::Sqlite(
            dir.path().join("laptop.db"),
        ))
        .sync_options(SyncOptions::default().with_auto(false))
        .remote(
            "hub".parse().unwrap(),
            HubProxy {
                on_answer: forge,
                ..HubProxy::new(&hub, "ann")
            },
        )
        .build()
        .await
        .unwrap();
    let mut events = laptop.events();
    laptop.sync_now().await.unwrap();
    let listens = listen(&laptop).await;
    assert!(!refuses_phone(&phone_client, listens.local_addr()).await);
    assert!(hub_config(&laptop).await.trust.revocations().is_empty());
    // Nothing was reported either (a sync's events are sent before it returns).
    use futures::{FutureExt as _, StreamExt as _};
    let mut seen = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        seen.push(e);
    }
    assert!(!seen.is_empty(), "the sync reported nothing at all");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::DeviceRevoked { .. })),
        "{seen:?}"
    );
}
