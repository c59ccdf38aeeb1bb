//! One role matrix, two serving sides: what a member's device may write is decided the same
//! way by a hub and by a peer device serving its own replica.
//!
//! Bob joins ann's folder as an owner; the serving side then gives him the role under test
//! while his device has not heard of it, so that his device writes as an owner would and only
//! the serving side's guard decides.

use std::collections::BTreeSet;

use futures::{FutureExt, StreamExt};
use mesh_client::prelude::*;
use mesh_client::transport::InProcessHub;

use crate::common::builder;
use crate::peer::{key, listening, peer_client, Authority};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Write {
    /// A new note of bob's.
    Create,
    /// A change to ann's note.
    EditOthers,
    /// Deleting ann's other note.
    DeleteOthers,
    /// Inviting carol as a reader.
    Invite,
}

/// The shared table: for each role, the writes the serving side accepts.
const MATRIX: &[(Role, &[Write])] = &[
    (Role::Reader, &[]),
    (Role::Author, &[Write::Create]),
    (
        Role::Full,
        &[
            Write::Create,
            Write::EditOthers,
            Write::DeleteOthers,
            Write::Invite,
        ],
    ),
    (
        Role::Owner,
        &[
            Write::Create,
            Write::EditOthers,
            Write::DeleteOthers,
            Write::Invite,
        ],
    ),
];

/// The serving side and bob's device syncing with it.
struct Setup {
    /// Ann's view of the serving replica (the hub's, through her synced client; or her own
    /// device when it serves).
    ann: MeshClient,
    bob: MeshClient,
    _serving: Box<dyn std::any::Any + Send>,
    via_hub: bool,
}

async fn over_hub() -> Setup {
    let hub = InProcessHub::new();
    let open = |user: &str, dev: &str| {
        builder(user, dev)
            .sync_options(SyncOptions::default().with_auto(false))
            .remote("hub".parse().unwrap(), hub.connect(user.parse().unwrap()))
            .build()
    };
    let (ann, bob) = (
        open("ann", "laptop").await.unwrap(),
        open("bob", "desk").await.unwrap(),
    );
    Setup {
        ann,
        bob,
        _serving: Box::new(hub),
        via_hub: true,
    }
}

async fn over_peer() -> Setup {
    let mesh = Authority::new(100);
    let (ann_key, bob_key) = (key(1), key(3));
    let (ann, listener, _) = listening(&mesh, "ann", "laptop", &ann_key).await;
    let bob = peer_client(
        &mesh,
        ("bob", "desk"),
        &bob_key,
        "ann-laptop",
        listener.local_addr(),
    )
    .await;
    Setup {
        ann,
        bob,
        _serving: Box::new(listener),
        via_hub: false,
    }
}

impl Setup {
    async fn ann_syncs(&self) {
        if self.via_hub {
            self.ann.sync_now().await.unwrap();
        }
    }
}

/// Runs bob's four writes as `role` against one serving side; returns the ones it accepted.
async fn accepted(s: Setup, role: Role) -> BTreeSet<Write> {
    let (ann, bob) = (&s.ann, &s.bob);
    let bob_id: UserId = "bob".parse().unwrap();
    let folder = ann
        .create_folder("Notes", FolderKind::app("notes").unwrap())
        .await
        .unwrap()
        .id;
    let notes = ann
        .create_feed(&folder, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let kept = ann
        .put(
            &folder,
            &notes,
            EntryDraft::new("ann's", serde_json::json!({})),
        )
        .await
        .unwrap();
    let doomed = ann
        .put(
            &folder,
            &notes,
            EntryDraft::new("ann's other", serde_json::json!({})),
        )
        .await
        .unwrap();
    ann.invite(&folder, &bob_id, Role::Owner).await.unwrap();
    s.ann_syncs().await;
    bob.sync_now().await.unwrap();
    bob.accept(&folder).await.unwrap();
    bob.sync_now().await.unwrap();
    s.ann_syncs().await;
    assert_eq!(bob.role(&folder).await.unwrap(), Some(Role::Owner));

    // The serving side demotes bob; his device has not heard yet.
    if role != Role::Owner {
        ann.set_role(&folder, &bob_id, role).await.unwrap();
        s.ann_syncs().await;
    }
    let mut events = bob.events();
    let created = bob
        .put(
            &folder,
            &notes,
            EntryDraft::new("bob's", serde_json::json!({})),
        )
        .await
        .unwrap();
    bob.put_with_id(
        &folder,
        &notes,
        kept.entry_id().clone(),
        EntryDraft::new("bob changed it", serde_json::json!({})),
    )
    .await
    .unwrap();
    bob.delete(&folder, &notes, doomed.entry_id())
        .await
        .unwrap();
    bob.invite(&folder, &"carol".parse().unwrap(), Role::Reader)
        .await
        .unwrap();
    bob.sync_now().await.unwrap();
    // Refusals are reported on bob's event stream before that sync returns.
    let mut refused = BTreeSet::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        if let Event::Refused { id, kind, .. } = e {
            assert_eq!(kind, ErrorKind::PermissionDenied);
            refused.insert(id.to_string());
        }
    }
    s.ann_syncs().await;
    // What the serving side holds agrees with what bob was told.
    let title = |id: &EntryId| {
        let (ann, folder, notes, id) = (ann.clone(), folder.clone(), notes.clone(), id.clone());
        async move {
            ann.get(&folder, &notes, &id)
                .await
                .unwrap()
                .map(|e| e.content.title)
        }
    };
    let mut ok = BTreeSet::new();
    let has_create = title(created.entry_id()).await.is_some();
    assert_eq!(has_create, !refused.contains(created.entry_id().as_str()));
    if has_create {
        ok.insert(Write::Create);
    }
    let edited = title(kept.entry_id()).await.as_deref() == Some("bob changed it");
    assert_eq!(edited, !refused.contains(kept.entry_id().as_str()));
    if edited {
        ok.insert(Write::EditOthers);
    }
    let deleted = title(doomed.entry_id()).await.is_none();
    assert_eq!(deleted, !refused.contains(doomed.entry_id().as_str()));
    if deleted {
        ok.insert(Write::DeleteOthers);
    }
    let invited = ann
        .members(&folder)
        .await
        .unwrap()
        .iter()
        .any(|m| m.user.as_str() == "carol");
    assert_eq!(invited, !refused.contains("carol"));
    if invited {
        ok.insert(Write::Invite);
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_and_a_peer_apply_the_same_role_matrix() {
    for (role, allowed) in MATRIX {
        let want: BTreeSet<Write> = allowed.iter().copied().collect();
        assert_eq!(
            accepted(over_hub().await, *role).await,
            want,
            "hub, {role:?}"
        );
        assert_eq!(
            accepted(over_peer().await, *role).await,
            want,
            "peer, {role:?}"
        );
    }
}
