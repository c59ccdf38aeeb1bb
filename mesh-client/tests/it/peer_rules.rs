//! The access rules on what a device receives from a peer: a peer is as hostile as any pusher,
//! so what it sends is judged against this device's own roster and keyring.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mesh_client::peer::PeerTransport;
use mesh_client::prelude::*;
use mesh_client::transport::Transport;

use crate::peer::{device, key, listening, loopback, next_event, peer_client, Authority};

/// Bob's device listens; ann's laptop syncs with it. Once ann has made bob a reader, a note
/// bob writes before he hears of it is refused by ann's laptop when it pulls from bob: it is
/// judged by ann's roster, not taken on bob's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_version_its_signer_may_not_write_is_rejected() {
    let mesh = Authority::new(100);
    let (ann_key, bob_key) = (key(1), key(3));
    let (bob, bob_listener, _) = listening(&mesh, "bob", "desk", &bob_key).await;
    let ann = peer_client(
        &mesh,
        ("ann", "laptop"),
        &ann_key,
        "bob-desk",
        bob_listener.local_addr(),
    )
    .await;
    let folder = ann
        .create_folder("Notes", FolderKind::app("notes").unwrap())
        .await
        .unwrap()
        .id;
    let notes = ann
        .create_feed(&folder, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let bob_id: UserId = "bob".parse().unwrap();
    ann.invite(&folder, &bob_id, Role::Author).await.unwrap();
    // Ann's sync hands bob the folder; bob accepts; ann's next sync learns it.
    ann.sync_now().await.unwrap();
    bob.accept(&folder).await.unwrap();
    ann.sync_now().await.unwrap();
    let bob_on_laptop = |members: Vec<Member>| {
        members
            .into_iter()
            .find(|m| m.user == bob_id)
            .map(|m| (m.role, m.state))
    };
    assert_eq!(
        bob_on_laptop(ann.members(&folder).await.unwrap()),
        Some((Role::Author, InvitationState::Active))
    );

    // An author's note travels.
    let first = bob
        .put(
            &folder,
            &notes,
            EntryDraft::new("bob's first", serde_json::json!({})),
        )
        .await
        .unwrap();
    ann.sync_now().await.unwrap();
    assert!(ann
        .get(&folder, &notes, first.entry_id())
        .await
        .unwrap()
        .is_some());

    // Ann makes bob a reader; bob, who has not heard yet, writes again.
    ann.set_role(&folder, &bob_id, Role::Reader).await.unwrap();
    let late = bob
        .put(
            &folder,
            &notes,
            EntryDraft::new("too late", serde_json::json!({})),
        )
        .await
        .unwrap();
    let mut events = ann.events();
    ann.sync_now().await.unwrap();
    match next_event(&mut events, |e| matches!(e, Event::Rejected { .. })).await {
        Event::Rejected { feed, id, kind, .. } => {
            assert_eq!(kind, ErrorKind::PermissionDenied);
            assert_eq!(feed, FeedKey::folder(folder.clone(), notes.clone()));
            assert_eq!(&id, late.entry_id());
        }
        other => unreachable!("{other:?}"),
    }
    assert!(ann
        .get(&folder, &notes, late.entry_id())
        .await
        .unwrap()
        .is_none());
    // Bob's device heard of the change in the same session (ann pushed it).
    assert_eq!(bob.role(&folder).await.unwrap(), Some(Role::Reader));
}

/// A loopback forwarder whose target can be switched: each new connection goes to the target
/// of the moment.
async fn switchable_proxy(
    target: SocketAddr,
) -> (
    SocketAddr,
    Arc<Mutex<SocketAddr>>,
    tokio::task::JoinHandle<()>,
) {
    let front = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = front.local_addr().unwrap();
    let target = Arc::new(Mutex::new(target));
    let to = target.clone();
    let task = tokio::spawn(async move {
        // Bounded by the test: it is aborted at the end.
        while let Ok((mut inbound, _)) = front.accept().await {
            let dest = *to.lock().unwrap();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(dest).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, target, task)
}

/// A peer transport's pages are one peer's word: once its peer proved to be ann's laptop, a
/// new connection to the same address that proves to be another device is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_transport_refuses_a_peer_that_changed_identity() {
    let mesh = Authority::new(100);
    let (laptop_key, desk_key, phone_key) = (key(1), key(3), key(2));
    let laptop = device("ann", "laptop", &laptop_key).await;
    let laptop_listener = laptop
        .listen_peers(loopback(), mesh.config("ann", "laptop", &laptop_key))
        .await
        .unwrap();
    let desk = device("bob", "desk", &desk_key).await;
    let desk_listener = desk
        .listen_peers(loopback(), mesh.config("bob", "desk", &desk_key))
        .await
        .unwrap();
    let (addr, target, proxy) = switchable_proxy(laptop_listener.local_addr()).await;
    let to_peer = PeerTransport::new(addr, mesh.config("ann", "phone", &phone_key)).unwrap();
    let first = to_peer.connect().await.unwrap();
    assert_eq!(
        (first.user.as_str(), first.device.as_str()),
        ("ann", "laptop")
    );
    let relayer = to_peer.relayer().await.unwrap().unwrap();
    assert_eq!(relayer.user.as_str(), "ann");

    // The laptop goes away; bob's desk now answers at that address.
    *target.lock().unwrap() = desk_listener.local_addr();
    let mut laptop_events = laptop.events();
    laptop_listener.close();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(
            laptop_events.next().await,
            Some(Event::PeerLeft { .. }) | None
        ) {}
    })
    .await
    .expect("the laptop's side of the connection ends");
    let refused = to_peer
        .send(mesh_core::sync::Request::Feeds {
            from: "phone".parse().unwrap(),
            only: None,
            certificates: false,
        })
        .await
        .expect_err("a connection proving another device must be refused");
    assert!(
        refused.to_string().contains("now proves to be device desk"),
        "{refused}"
    );
    proxy.abort();
}

/// Certificates travel with the data: a Reader's device carries an Owner's signed note to a
/// third user's device, which accepts it as the Owner's write because the certificate of the
/// Owner's device came with the Reader's `feeds` answer (the Reader's device had it from the
/// hub), though the two never met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_device_relays_an_owners_note_that_a_third_device_accepts() {
    use crate::peer_mesh::{add_peer, device_of, listen, sync, titles};
    use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork};
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (ann, _) = device_of(&hub, &net, dir.path(), "ann", "ann-laptop").await;
    let (bob, _) = device_of(&hub, &net, dir.path(), "bob", "bob-phone").await;
    let (carol, carol_link) = device_of(&hub, &net, dir.path(), "carol", "carol-desk").await;
    let (folder, notes) = crate::peer::notes_folder(&ann, "Shared").await;
    for user in ["bob", "carol"] {
        ann.invite(&folder, &user.parse().unwrap(), Role::Reader)
            .await
            .unwrap();
    }
    ann.sync_now().await.unwrap();
    for c in [&bob, &carol] {
        c.sync_now().await.unwrap();
        c.accept(&folder).await.unwrap();
        c.sync_now().await.unwrap();
    }
    // Bob's phone listens for peers, then hears ann's note from the hub.
    let bob_listens = listen(&bob).await;
    ann.put(
        &folder,
        &notes,
        EntryDraft::new("from ann", serde_json::json!({})),
    )
    .await
    .unwrap();
    ann.sync_now().await.unwrap();
    bob.sync_now().await.unwrap();
    assert_eq!(titles(&bob, &folder, &notes).await, ["from ann"]);

    // Carol's desk is away from the hub and syncs with bob's phone only.
    carol_link.set_online(false);
    add_peer(&carol, "bob-phone", bob_listens.local_addr()).await;
    let mut events = carol.events();
    sync(&carol).await;
    assert_eq!(
        titles(&carol, &folder, &notes).await,
        ["from ann"],
        "refused: {:?}",
        {
            use futures::FutureExt as _;
            let mut refused = Vec::new();
            while let Some(Some(e)) = events.next().now_or_never() {
                if matches!(e, Event::Rejected { .. }) {
                    refused.push(e);
                }
            }
            refused
        }
    );
}
