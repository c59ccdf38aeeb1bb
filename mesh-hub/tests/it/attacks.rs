//! The attacks of issue "verifiable writes", each tried against a real hub on loopback, through
//! the sync endpoint and through an Atom POST, by devices holding real tokens and enrolled keys.

use mesh_client::transport::{HttpTransport, Transport};
use mesh_core::atom::{write_feed, AtomFeed};
use mesh_core::content::JsonContent;
use mesh_core::feedsync::{HistoryItem, Version};
use mesh_core::id::EntryId;
use mesh_core::model::{Entry, EntryDraft, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{Cursor, MemoryStore};
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_core::trust::{seal_version, PublicKey, SecretKey};
use serde_json::json;

use crate::hubs::{fast, send, Rest, TestHub};

/// A device of the mesh as an attacker drives it: its own key (enrolled with the hub), a
/// replica it writes on, and raw sync and Atom requests.
struct Device {
    user: String,
    device: String,
    key: SecretKey,
    http: HttpTransport,
    rest: Rest,
    replica: Replica<MemoryStore>,
    clock: i64,
}

fn id(s: &str) -> EntryId {
    s.parse().unwrap()
}

fn member(user: &str, role: Role, state: InvitationState) -> EntryDraft {
    EntryDraft {
        title: user.into(),
        content: JsonContent::from_serialize(&Member {
            user: user.parse().unwrap(),
            role,
            state,
            invited_by: "ann".parse().unwrap(),
            invited_at: Timestamp::from_unix(1_700_000_000).unwrap(),
        })
        .unwrap(),
        media: None,
    }
}

impl Device {
    async fn new(hub: &TestHub, user: &str, seed: u8) -> Device {
        let device = format!("{user}-dev");
        let token = hub.token(user, &device);
        let http = HttpTransport::with_config(&hub.url, token.clone(), fast()).unwrap();
        let key = SecretKey::from_seed([seed; 32]);
        http.enroll(&device.parse().unwrap(), &key.public())
            .await
            .unwrap();
        let mut replica = Replica::new(MemoryStore::new(device.parse().unwrap()));
        replica.set_signer(key.clone());
        Device {
            user: user.into(),
            device,
            key,
            http,
            rest: Rest::new(hub, token),
            replica,
            clock: 0,
        }
    }

    fn actor(&self) -> Actor {
        Actor::new(self.user.parse().unwrap(), self.device.parse().unwrap())
    }

    /// The wall clock (certificates are valid from now on), one second further each call.
    fn now(&mut self) -> Timestamp {
        self.clock += 1;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Timestamp::from_unix(secs + self.clock).unwrap()
    }

    /// Pulls all of `feed` from the hub into the replica.
    async fn pull(&mut self, feed: &FeedKey) {
        let r = self
            .http
            .send(Request::Pull {
                from: self.device.parse().unwrap(),
                feed: feed.clone(),
                since: Cursor::ZERO,
                limit: 500,
            })
            .await
            .unwrap();
        let Response::Changes { entries, .. } = r else {
            panic!("{r:?}")
        };
        self.replica.merge_batch(feed, entries, None).unwrap();
    }

    /// Pushes through the sync endpoint: the refusal code of each entry.
    async fn push(&self, feed: &FeedKey, entries: Vec<Entry>) -> Vec<Option<String>> {
        let r = self
            .http
            .send(Request::Push {
                from: self.device.parse().unwrap(),
                feed: feed.clone(),
                entries,
            })
            .await
            .unwrap();
        let Response::Pushed { results, .. } = r else {
            panic!("{r:?}")
        };
        results.into_iter().map(|r| r.code).collect()
    }

    /// POSTs an Atom feed of `entries` to `feed`'s entries resource.
    async fn atom(&self, folder: &str, name: &str, entries: Vec<Entry>) -> Vec<Option<String>> {
        let xml = write_feed(&AtomFeed {
            id: "urn:attack".into(),
            title: "attack".into(),
            updated: Timestamp::from_unix(1_900_000_000).unwrap(),
            entries,
            next: None,
        });
        let (s, v) = send(
            self.rest
                .req(
                    reqwest::Method::POST,
                    &format!("/mesh/folders/{folder}/feeds/{name}/entries"),
                )
                .header("Content-Type", "application/atom+xml")
                .body(xml),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().map(String::from))
            .collect()
    }
}

struct Folder {
    hub: TestHub,
    ann: Rest,
    members: FeedKey,
    notes: FeedKey,
}

/// Folder `f1@ann` (feed `notes`, entry `n1` by ann) with ann as owner, bob Reader, carol invited,
/// dave declined, erin Author and frank Full, all set up through the REST API.
async fn folder() -> Folder {
    let hub = TestHub::memory().await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-rest"));
    let (s, v) = ann
        .post("/mesh/folders", json!({"name": "F", "id": "f1@ann"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = ann
        .post("/mesh/folders/f1@ann/feeds", json!({"name": "notes"}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = ann
        .post(
            "/mesh/folders/f1@ann/feeds/notes/entries",
            json!({"id": "n1", "title": "ann's note", "content": {}}),
        )
        .await;
    assert_eq!(s, 201);
    for (user, role, answer) in [
        ("bob", "reader", Some("accept")),
        ("carol", "reader", None),
        ("dave", "reader", Some("decline")),
        ("erin", "author", Some("accept")),
        ("frank", "full", Some("accept")),
    ] {
        let rest = Rest::new(&hub, hub.token(user, &format!("{user}-rest")));
        let (s, v) = ann
            .post(
                "/mesh/folders/f1@ann/members",
                json!({"user": user, "role": role}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        if let Some(answer) = answer {
            let (s, v) = rest
                .post(&format!("/mesh/invitations/f1@ann/{answer}"), json!(null))
                .await;
            assert_eq!(s, 200, "{v}");
        }
    }
    let f = "f1@ann".parse().unwrap();
    Folder {
        members: FeedKey::members(&f),
        notes: FeedKey::folder(f, "notes".parse().unwrap()),
        hub,
        ann,
    }
}

impl Folder {
    async fn role(&self, user: &str) -> (String, String) {
        let (_, m) = self
            .ann
            .get(&format!("/mesh/folders/f1@ann/members/{user}"))
            .await;
        (
            m["role"].as_str().unwrap_or("").into(),
            m["state"].as_str().unwrap_or("").into(),
        )
    }

    async fn note(&self, name: &str) -> serde_json::Value {
        self.ann
            .get(&format!("/mesh/folders/f1@ann/feeds/notes/entries/{name}"))
            .await
            .1["content"]
            .clone()
    }
}

fn conflict(mut entry: Entry, extra: Entry) -> Entry {
    entry.conflicts.push(Version {
        sync: extra.sync,
        content: extra.content,
    });
    entry
}

fn refused(code: &str) -> Vec<Option<String>> {
    vec![Some(code.to_string())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cannot_become_owner_through_a_hidden_conflict_by_sync_or_atom() {
    let f = folder().await;
    let mut bob = Device::new(&f.hub, "bob", 2).await;
    bob.pull(&f.members).await;
    let mut bob2 = Replica::new(MemoryStore::new("bob-2".parse().unwrap()));
    bob2.set_signer(bob.key.clone());
    bob2.merge_batch(
        &f.members,
        vec![bob.replica.get(&f.members, &id("bob")).unwrap().unwrap()],
        None,
    )
    .unwrap();
    let (a, now) = (bob.actor(), bob.now());
    // Two updates of his own record, so that the forged version has the larger count.
    let _first = bob
        .replica
        .update(
            &f.members,
            &id("bob"),
            member("bob", Role::Owner, InvitationState::Active),
            &a,
            now,
        )
        .unwrap()
        .entry;
    let owner = bob
        .replica
        .update(
            &f.members,
            &id("bob"),
            member("bob", Role::Owner, InvitationState::Active),
            &a,
            now,
        )
        .unwrap()
        .entry;
    assert!(
        owner.sync.updates
            > bob2
                .get(&f.members, &id("bob"))
                .unwrap()
                .unwrap()
                .sync
                .updates
                + 1
    );
    let leave = bob2.delete(&f.members, &id("bob"), &a, now).unwrap().entry;
    let forged = conflict(leave, owner.clone());
    assert_eq!(
        bob.push(&f.members, vec![forged.clone()]).await,
        refused("permission_denied")
    );
    assert_eq!(
        bob.atom("f1@ann", "members", vec![forged]).await,
        refused("permission_denied")
    );
    // With `noconflicts`, the forged version alone: the flag is not signed, so a signed
    // version cannot carry it; written as an outside tool's (unsigned) version, it is bob's
    // own write, which his role does not allow.
    let mut alone = owner;
    alone.sync.noconflicts = true;
    assert_eq!(
        bob.atom("f1@ann", "members", vec![alone.clone()]).await,
        refused("invalid_signature")
    );
    alone.sync.history[0].by = Some("bobs-tool".parse().unwrap());
    alone.sync.history[0].seal = None;
    assert_eq!(
        bob.atom("f1@ann", "members", vec![alone]).await,
        refused("permission_denied")
    );
    assert_eq!(f.role("bob").await, ("reader".into(), "active".into()));
    assert_eq!(f.role("ann").await, ("owner".into(), "active".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_declined_invitees_cannot_make_themselves_owners() {
    let f = folder().await;
    for (user, seed) in [("carol", 3), ("dave", 4)] {
        let mut d = Device::new(&f.hub, user, seed).await;
        // A declined invitee cannot read the members feed: build on nothing.
        let members = f.ann.get("/mesh/folders/f1@ann/members").await.1;
        assert!(members.is_array());
        let (a, now) = (d.actor(), d.now());
        let e = d
            .replica
            .create(
                &f.members,
                id(user),
                member(user, Role::Owner, InvitationState::Active),
                &a,
                now,
            )
            .unwrap()
            .entry;
        let got = d.push(&f.members, vec![e]).await;
        assert!(got[0].is_some(), "{user}: {got:?}");
    }
    assert_eq!(f.role("carol").await, ("reader".into(), "invited".into()));
    assert_eq!(f.role("dave").await, ("reader".into(), "declined".into()));
    assert_eq!(f.role("ann").await, ("owner".into(), "active".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_history_item_cannot_swallow_another_devices_next_edit() {
    let f = folder().await;
    let mut frank = Device::new(&f.hub, "frank", 6).await;
    let mut erin = Device::new(&f.hub, "erin", 5).await;
    frank.pull(&f.notes).await;
    erin.pull(&f.notes).await;
    // erin creates e1; frank claims erin's device already made update 1,000,000 of it.
    let (a, now) = (erin.actor(), erin.now());
    let e1 = erin
        .replica
        .create(
            &f.notes,
            id("e1"),
            EntryDraft::new("erin's", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(erin.push(&f.notes, vec![e1]).await, vec![None]);
    frank.pull(&f.notes).await;
    let (a, now) = (frank.actor(), frank.now());
    let mut edit = frank
        .replica
        .update(
            &f.notes,
            &id("e1"),
            EntryDraft::new("frank's", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    edit.sync.history.push(HistoryItem::new(
        1_000_000,
        Some(now),
        Some("erin-dev".parse().unwrap()),
    ));
    assert_eq!(
        frank.push(&f.notes, vec![edit.clone()]).await,
        refused("invalid_signature")
    );
    assert_eq!(
        frank.atom("f1@ann", "notes", vec![edit]).await,
        refused("invalid_signature")
    );
    // erin's next honest edit lands.
    let (a, now) = (erin.actor(), erin.now());
    let e1 = erin
        .replica
        .update(
            &f.notes,
            &id("e1"),
            EntryDraft::new("erin's edit", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(erin.push(&f.notes, vec![e1]).await, vec![None]);
    assert_eq!(f.note("e1").await["title"], "erin's edit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_in_another_devices_name_cannot_swallow_its_create() {
    let f = folder().await;
    let mut erin = Device::new(&f.hub, "erin", 5).await;
    let mut frank = Device::new(&f.hub, "frank", 6).await;
    let (_, now) = (erin.actor(), erin.now());
    let a = Actor::new("erin".parse().unwrap(), "frank-dev".parse().unwrap());
    let mut planted = erin
        .replica
        .create(
            &f.notes,
            id("frank-1"),
            EntryDraft::new("x", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    planted = erin
        .replica
        .delete(&f.notes, &planted.sync.id, &a, now)
        .unwrap()
        .entry;
    assert_eq!(
        erin.push(&f.notes, vec![planted.clone()]).await,
        refused("invalid_signature")
    );
    assert_eq!(
        erin.atom("f1@ann", "notes", vec![planted]).await,
        refused("invalid_signature")
    );
    let (a, now) = (frank.actor(), frank.now());
    let mine = frank
        .replica
        .create(
            &f.notes,
            id("frank-1"),
            EntryDraft::new("mine", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(frank.push(&f.notes, vec![mine]).await, vec![None]);
    assert_eq!(f.note("frank-1").await["title"], "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_cannot_be_forged_and_only_invitees_accept() {
    let f = folder().await;
    let mut erin = Device::new(&f.hub, "erin", 5).await;
    let (a, now) = (erin.actor(), erin.now());
    let mut e = erin
        .replica
        .create(
            &f.notes,
            id("e9"),
            EntryDraft::new("ann's?", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    e.content.author = "ann".parse().unwrap();
    e.sync.history[0].seal = None;
    seal_version(
        &f.notes,
        &id("e9"),
        &mut e.sync.history,
        false,
        &e.content,
        &erin.key,
    );
    assert_eq!(
        erin.push(&f.notes, vec![e.clone()]).await,
        refused("permission_denied")
    );
    assert_eq!(
        erin.atom("f1@ann", "notes", vec![e]).await,
        refused("permission_denied")
    );
    // frank (Full) accepts carol's invitation for her.
    let mut frank = Device::new(&f.hub, "frank", 6).await;
    frank.pull(&f.members).await;
    let (a, now) = (frank.actor(), frank.now());
    let accept = frank
        .replica
        .update(
            &f.members,
            &id("carol"),
            member("carol", Role::Reader, InvitationState::Active),
            &a,
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        frank.push(&f.members, vec![accept]).await,
        refused("permission_denied")
    );
    assert_eq!(f.role("carol").await, ("reader".into(), "invited".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sole_owner_cannot_leave_and_concurrent_demotions_keep_one_owner() {
    let f = folder().await;
    let mut ann = Device::new(&f.hub, "ann", 1).await;
    ann.pull(&f.members).await;
    let (a, now) = (ann.actor(), ann.now());
    let leave = ann
        .replica
        .delete(&f.members, &id("ann"), &a, now)
        .unwrap()
        .entry;
    assert_eq!(
        ann.push(&f.members, vec![leave]).await,
        refused("permission_denied")
    );
    assert_eq!(f.role("ann").await, ("owner".into(), "active".into()));
    // Two owners, and both demotions sent at once through REST: one of them stays an owner.
    let (s, _) = f
        .ann
        .put(
            "/mesh/folders/f1@ann/members/frank",
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(s, 200);
    let frank = Rest::new(&f.hub, f.hub.token("frank", "frank-rest2"));
    let (r1, r2) = tokio::join!(
        f.ann.put(
            "/mesh/folders/f1@ann/members/frank",
            json!({"role": "full"})
        ),
        frank.put("/mesh/folders/f1@ann/members/ann", json!({"role": "full"})),
    );
    let owners = [f.role("ann").await.0, f.role("frank").await.0]
        .iter()
        .filter(|r| *r == "owner")
        .count();
    assert_eq!(owners, 1, "{r1:?} {r2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_count_at_the_end_of_the_counter_is_refused() {
    let f = folder().await;
    let mut frank = Device::new(&f.hub, "frank", 6).await;
    frank.pull(&f.notes).await;
    let (a, now) = (frank.actor(), frank.now());
    let mut e = frank
        .replica
        .update(
            &f.notes,
            &id("n1"),
            EntryDraft::new("frozen", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    e.sync.updates = u32::MAX;
    e.sync.history[0].sequence = u32::MAX;
    e.sync.history[0].seal = None;
    seal_version(
        &f.notes,
        &id("n1"),
        &mut e.sync.history,
        false,
        &e.content,
        &frank.key,
    );
    assert_eq!(
        frank.push(&f.notes, vec![e.clone()]).await,
        refused("limit_exceeded")
    );
    assert_eq!(
        frank.atom("f1@ann", "notes", vec![e]).await,
        refused("limit_exceeded")
    );
    let (s, _) = f
        .ann
        .put(
            "/mesh/folders/f1@ann/feeds/notes/entries/n1",
            json!({"title": "still editable", "content": {}}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_binds_one_key_per_device_and_revocation_stops_new_versions() {
    let f = folder().await;
    let mut frank = Device::new(&f.hub, "frank", 6).await;
    // Another key for the same device is refused; the same key renews.
    let other = SecretKey::from_seed([60; 32]);
    let err = frank
        .http
        .enroll(&"frank-dev".parse().unwrap(), &other.public())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    frank
        .http
        .enroll(&"frank-dev".parse().unwrap(), &frank.key.public())
        .await
        .unwrap();
    // A key no signature could verify under is refused before anything is bound: the
    // neutral point (y = 1), the point of order 2 (y = p − 1) and a non-canonical encoding
    // (y = p + 1).
    let newcomer = "nina-dev";
    let nina =
        HttpTransport::with_config(&f.hub.url, f.hub.token("nina", newcomer), fast()).unwrap();
    let mut neutral = [0u8; 32];
    neutral[0] = 1;
    let mut order2 = [0xff; 32];
    (order2[0], order2[31]) = (0xec, 0x7f);
    let mut non_canonical = [0xff; 32];
    (non_canonical[0], non_canonical[31]) = (0xee, 0x7f);
    for bad in [neutral, order2, non_canonical] {
        let err = nina
            .enroll(&newcomer.parse().unwrap(), &PublicKey(bad))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("device key"), "{err}");
    }
    nina.enroll(
        &newcomer.parse().unwrap(),
        &SecretKey::from_seed([61; 32]).public(),
    )
    .await
    .unwrap();
    // A token enrolls only its own device.
    assert!(frank
        .http
        .enroll(&"erin-dev".parse().unwrap(), &frank.key.public())
        .await
        .is_err());
    // After revocation, versions it signs are refused even when another member relays them.
    frank.pull(&f.notes).await;
    let (a, now) = (frank.actor(), frank.now());
    let e = frank
        .replica
        .update(
            &f.notes,
            &id("n1"),
            EntryDraft::new("late", json!({})),
            &a,
            now,
        )
        .unwrap()
        .entry;
    f.hub
        .hub
        .revoke_device(&"frank-dev".parse().unwrap())
        .unwrap();
    let bob = Device::new(&f.hub, "bob", 2).await;
    assert_eq!(bob.push(&f.notes, vec![e]).await, refused("revoked"));
    assert_eq!(f.note("n1").await["title"], "ann's note");
}
