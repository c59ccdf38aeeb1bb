//! Access control of a replica serving several users.

use mesh_core::content::JsonContent;
use mesh_core::feedsync::MergeOutcome;
use mesh_core::id::{FolderId, UserId};
use mesh_core::model::{Entry, EntryDraft, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::Replica;
use mesh_core::store::{Cursor, MemoryStore};
use mesh_core::sync::guard::Pusher;
use mesh_core::sync::{respond_as, Request, Response};
use mesh_core::trust::NoKeyring;
use mesh_core::ErrorCode;

use crate::common::*;

fn member(user: &str, role: Role, state: InvitationState) -> EntryDraft {
    let m = Member {
        user: user.parse().unwrap(),
        role,
        state,
        invited_by: "ann".parse().unwrap(),
        invited_at: t(0),
    };
    EntryDraft {
        title: user.into(),
        content: JsonContent::from_serialize(&m).unwrap(),
        media: None,
    }
}

fn changes(r: &Replica<MemoryStore>, feed: &FeedKey) -> Vec<Entry> {
    r.changes_since(feed, Cursor::ZERO, 100)
        .unwrap()
        .changes
        .into_iter()
        .map(|c| c.entry)
        .collect()
}

fn push(
    hub: &mut Replica<MemoryStore>,
    user: &str,
    feed: &FeedKey,
    entries: Vec<Entry>,
) -> Vec<(MergeOutcome, bool)> {
    let req = Request::Push {
        from: format!("{user}-dev").parse().unwrap(),
        feed: feed.clone(),
        entries,
    };
    let Response::Pushed { results, .. } =
        respond_as(hub, Pusher::new(&user.parse().unwrap(), &NoKeyring), req).unwrap()
    else {
        panic!()
    };
    results
        .into_iter()
        .map(|r| (r.outcome, r.refused.is_some()))
        .collect()
}

fn pull(hub: &mut Replica<MemoryStore>, user: &str, feed: &FeedKey) -> Result<usize, ErrorCode> {
    let req = Request::Pull {
        from: "x".parse().unwrap(),
        feed: feed.clone(),
        since: Cursor::ZERO,
        limit: 100,
    };
    let who = user.parse::<UserId>().unwrap();
    let decoded = match respond_as(hub, Pusher::new(&who, &NoKeyring), req) {
        Ok(Response::Changes { entries, .. }) => Ok(entries),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.code()),
    };
    // A hub's pull, with the entries as stored, is judged the same and answers the same.
    let from = "x".parse().unwrap();
    let encoded =
        mesh_core::sync::guard::pull_as(hub, &who, &from, feed.clone(), Cursor::ZERO, 100);
    match (&decoded, encoded) {
        (Ok(entries), Ok(page)) => {
            let json: Vec<String> = entries
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect();
            let stored: Vec<&str> = page.entries.iter().map(|e| e.get()).collect();
            assert_eq!(stored, json, "pull_as answers what respond_as does");
        }
        (Err(code), Err(e)) => assert_eq!(*code, e.code(), "pull_as refuses as respond_as does"),
        (d, e) => panic!("respond_as: {d:?}; pull_as: {e:?}"),
    }
    decoded.map(|e| e.len())
}

#[test]
fn roles_decide_what_a_served_replica_accepts_and_shows() {
    let folder: FolderId = "f@ann".parse().unwrap();
    let (members, notes) = (
        FeedKey::members(&folder),
        FeedKey::folder(folder.clone(), "notes".parse().unwrap()),
    );
    let mut ann_dev = replica("ann-dev");
    let ann = actor("ann", "ann-dev");
    ann_dev
        .create(
            &members,
            id("ann"),
            member("ann", Role::Owner, InvitationState::Active),
            &ann,
            t(0),
        )
        .unwrap();
    ann_dev
        .create(
            &members,
            id("bob"),
            member("bob", Role::Reader, InvitationState::Invited),
            &ann,
            t(1),
        )
        .unwrap();
    ann_dev
        .create(&notes, id("n1"), draft("note"), &ann, t(2))
        .unwrap();
    let mut hub = replica("hub");

    // The owner entry and an invitation made by that owner arrive in one batch: both merge.
    assert_eq!(
        push(&mut hub, "ann", &members, changes(&ann_dev, &members)),
        [(MergeOutcome::Added, false); 2]
    );
    assert_eq!(
        push(&mut hub, "ann", &notes, changes(&ann_dev, &notes)),
        [(MergeOutcome::Added, false)]
    );
    // Someone else cannot claim the folder, nor see it.
    let mut eve_dev = replica("eve-dev");
    eve_dev
        .create(
            &members,
            id("eve"),
            member("eve", Role::Owner, InvitationState::Active),
            &actor("eve", "eve-dev"),
            t(3),
        )
        .unwrap();
    assert_eq!(
        push(&mut hub, "eve", &members, changes(&eve_dev, &members)),
        [(MergeOutcome::Unchanged, true)]
    );
    assert_eq!(pull(&mut hub, "eve", &notes), Err(ErrorCode::NotFound));
    assert_eq!(pull(&mut hub, "eve", &members), Err(ErrorCode::NotFound));
    // Bob, invited, sees the members feed but not the notes until he accepts.
    assert_eq!(pull(&mut hub, "bob", &members), Ok(2));
    assert_eq!(pull(&mut hub, "bob", &notes), Err(ErrorCode::NotFound));
    let mut bob_dev = replica("bob-dev");
    bob_dev
        .merge_batch(&members, changes(&hub, &members), None)
        .unwrap();
    bob_dev
        .merge_batch(&notes, changes(&ann_dev, &notes), None)
        .unwrap();
    let bob = actor("bob", "bob-dev");
    let accepted = bob_dev
        .update(
            &members,
            &id("bob"),
            member("bob", Role::Reader, InvitationState::Active),
            &bob,
            t(4),
        )
        .unwrap();
    assert_eq!(
        push(&mut hub, "bob", &members, vec![accepted.entry]),
        [(MergeOutcome::Updated, false)]
    );
    assert_eq!(pull(&mut hub, "bob", &notes), Ok(1));
    // A Reader cannot promote himself, write, or change ann's note; relaying what the hub
    // already knows needs no permission.
    let promoted = bob_dev
        .update(
            &members,
            &id("bob"),
            member("bob", Role::Owner, InvitationState::Active),
            &bob,
            t(5),
        )
        .unwrap();
    let written = bob_dev
        .create(&notes, id("n2"), draft("bob's"), &bob, t(5))
        .unwrap();
    let edited = bob_dev
        .update(&notes, &id("n1"), draft("edited"), &bob, t(6))
        .unwrap();
    assert_eq!(
        push(&mut hub, "bob", &members, vec![promoted.entry]),
        [(MergeOutcome::Unchanged, true)]
    );
    assert_eq!(
        push(&mut hub, "bob", &notes, vec![written.entry, edited.entry]),
        [
            (MergeOutcome::Unchanged, true),
            (MergeOutcome::Unchanged, true)
        ]
    );
    assert_eq!(
        push(
            &mut hub,
            "bob",
            &notes,
            vec![changes(&ann_dev, &notes)[0].clone()]
        ),
        [(MergeOutcome::Unchanged, false)]
    );
    // A stranger is refused everything, even what the hub already holds.
    assert_eq!(
        push(
            &mut hub,
            "eve",
            &notes,
            vec![changes(&ann_dev, &notes)[0].clone()]
        ),
        [(MergeOutcome::Unchanged, true)]
    );
    assert_eq!(pull(&mut hub, "ann", &notes), Ok(1));
}

/// Pushes as `user` against `keyring`; each entry's refusal code (`None`: merged).
fn push_with(
    hub: &mut Replica<MemoryStore>,
    keyring: &dyn mesh_core::trust::Keyring,
    user: &str,
    feed: &FeedKey,
    entries: Vec<Entry>,
) -> Vec<Option<String>> {
    let req = Request::Push {
        from: format!("{user}-dev").parse().unwrap(),
        feed: feed.clone(),
        entries,
    };
    let Response::Pushed { results, .. } =
        respond_as(hub, Pusher::new(&user.parse().unwrap(), keyring), req).unwrap()
    else {
        panic!()
    };
    results.into_iter().map(|r| r.code).collect()
}

#[test]
fn an_invitation_of_a_user_without_an_account_is_refused_when_the_keyring_knows_accounts() {
    use mesh_core::trust::{MemoryKeyring, SecretKey};
    let folder: FolderId = "f@ann".parse().unwrap();
    let members = FeedKey::members(&folder);
    let ann = actor("ann", "ann-dev");
    let mut ann_dev = replica("ann-dev");
    for (i, (user, role, state)) in [
        ("ann", Role::Owner, InvitationState::Active),
        ("bob", Role::Reader, InvitationState::Invited),
        ("nobody", Role::Reader, InvitationState::Invited),
    ]
    .into_iter()
    .enumerate()
    {
        ann_dev
            .create(
                &members,
                id(user),
                member(user, role, state),
                &ann,
                t(i as i64),
            )
            .unwrap();
    }
    let mut ring = MemoryKeyring::new(SecretKey::from_seed([1; 32]).public());
    // A keyring that names no account cannot tell: every invitation merges, as before.
    let mut open_hub = replica("hub");
    assert_eq!(
        push_with(
            &mut open_hub,
            &ring,
            "ann",
            &members,
            changes(&ann_dev, &members)
        ),
        [None, None, None]
    );
    // One that knows the accounts refuses the invitation of "nobody" alone, as not found.
    ring.add_user("ann".parse().unwrap());
    ring.add_user("bob".parse().unwrap());
    let mut hub = replica("hub");
    assert_eq!(
        push_with(
            &mut hub,
            &ring,
            "ann",
            &members,
            changes(&ann_dev, &members)
        ),
        [None, None, Some("not_found".to_string())]
    );
    assert!(hub.get(&members, &id("nobody")).unwrap().is_none());
    assert!(hub.get(&members, &id("bob")).unwrap().is_some());
    // Withdrawing the refused invitation (a tombstone of it) is accepted.
    ann_dev.delete(&members, &id("nobody"), &ann, t(9)).unwrap();
    let tombstone = ann_dev.get(&members, &id("nobody")).unwrap().unwrap();
    assert_eq!(
        push_with(&mut hub, &ring, "ann", &members, vec![tombstone]),
        [None]
    );
}

#[test]
fn a_folder_record_that_does_not_decode_is_refused() {
    use mesh_core::model::names;
    let folder: FolderId = "f@ann".parse().unwrap();
    let (members, info) = (FeedKey::members(&folder), FeedKey::info(&folder));
    let ann = actor("ann", "ann-dev");
    let mut ann_dev = replica("ann-dev");
    ann_dev
        .create(
            &members,
            id("ann"),
            member("ann", Role::Owner, InvitationState::Active),
            &ann,
            t(0),
        )
        .unwrap();
    let record = |kind: &str| EntryDraft {
        title: "F".into(),
        content: JsonContent::from_serialize(&serde_json::json!({
            "id": "f", "name": "F", "kind": kind, "created_by": "ann",
            "created_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap(),
        media: None,
    };
    let mut hub = replica("hub");
    let ring = NoKeyring;
    assert_eq!(
        push_with(
            &mut hub,
            &ring,
            "ann",
            &members,
            changes(&ann_dev, &members)
        ),
        [None]
    );
    let record_id = id(names::FOLDER_RECORD);
    ann_dev
        .create(&info, record_id.clone(), record("my files"), &ann, t(1))
        .unwrap();
    assert_eq!(
        push_with(&mut hub, &ring, "ann", &info, changes(&ann_dev, &info)),
        [Some("permission_denied".to_string())]
    );
    assert!(hub.get(&info, &record_id).unwrap().is_none());
    ann_dev
        .update(&info, &record_id, record("app/files"), &ann, t(2))
        .unwrap();
    assert_eq!(
        push_with(&mut hub, &ring, "ann", &info, changes(&ann_dev, &info)),
        [None]
    );
}

fn folder_record(folder: &FolderId, name: &str) -> EntryDraft {
    let f = mesh_core::model::Folder {
        id: folder.clone(),
        name: name.into(),
        kind: mesh_core::model::FolderKind::app("notes").unwrap(),
        created_by: "ann".parse().unwrap(),
        created_at: t(0),
    };
    EntryDraft {
        title: name.into(),
        content: JsonContent::from_serialize(&f).unwrap(),
        media: None,
    }
}

#[test]
fn a_deleted_folder_is_revoked_for_everyone() {
    use mesh_core::model::names;
    use mesh_core::sync::guard;
    let folder: FolderId = "f@ann".parse().unwrap();
    let (members, info, notes) = (
        FeedKey::members(&folder),
        FeedKey::info(&folder),
        FeedKey::folder(folder.clone(), "notes".parse().unwrap()),
    );
    let record = id(names::FOLDER_RECORD);
    let mut ann_dev = replica("ann-dev");
    let ann = actor("ann", "ann-dev");
    ann_dev
        .create(
            &members,
            id("ann"),
            member("ann", Role::Owner, InvitationState::Active),
            &ann,
            t(0),
        )
        .unwrap();
    ann_dev
        .create(
            &members,
            id("bob"),
            member("bob", Role::Full, InvitationState::Invited),
            &ann,
            t(1),
        )
        .unwrap();
    ann_dev
        .create(
            &info,
            record.clone(),
            folder_record(&folder, "F"),
            &ann,
            t(1),
        )
        .unwrap();
    ann_dev
        .create(&notes, id("n1"), draft("note"), &ann, t(2))
        .unwrap();
    let mut hub = replica("hub");
    for feed in [&members, &info, &notes] {
        for (outcome, refused) in push(&mut hub, "ann", feed, changes(&ann_dev, feed)) {
            assert!(!refused && outcome == MergeOutcome::Added, "{feed}");
        }
    }
    // Bob accepts.
    let mut bob_dev = replica("bob-dev");
    bob_dev
        .merge_batch(&members, changes(&hub, &members), None)
        .unwrap();
    bob_dev
        .update(
            &members,
            &id("bob"),
            member("bob", Role::Full, InvitationState::Active),
            &actor("bob", "bob-dev"),
            t(2),
        )
        .unwrap();
    push(&mut hub, "bob", &members, changes(&bob_dev, &members));
    assert_eq!(pull(&mut hub, "bob", &notes), Ok(1));

    // A Full member may not delete the folder; its owner may.
    bob_dev
        .merge_batch(&info, changes(&hub, &info), None)
        .unwrap();
    bob_dev
        .delete(&info, &record, &actor("bob", "bob-dev"), t(3))
        .unwrap();
    assert_eq!(
        push(&mut hub, "bob", &info, changes(&bob_dev, &info)),
        [(MergeOutcome::Unchanged, true)]
    );
    assert!(!guard::folder_deleted(hub.store(), &folder).unwrap());
    ann_dev.delete(&info, &record, &ann, t(3)).unwrap();
    assert_eq!(
        push(&mut hub, "ann", &info, changes(&ann_dev, &info)),
        [(MergeOutcome::Updated, false)]
    );
    assert!(guard::folder_deleted(hub.store(), &folder).unwrap());

    // Nobody reads its data any more: members see only that it was deleted.
    for user in ["ann", "bob"] {
        assert_eq!(
            pull(&mut hub, user, &notes),
            Err(ErrorCode::NotFound),
            "{user}"
        );
        assert_eq!(
            pull(&mut hub, user, &info),
            Ok(1),
            "{user} learns of the deletion"
        );
        assert!(pull(&mut hub, user, &members).is_ok());
        assert_eq!(
            guard::check_folder(
                hub.store(),
                &user.parse().unwrap(),
                &folder,
                mesh_core::model::Action::Read
            )
            .unwrap_err()
            .code(),
            ErrorCode::NotFound
        );
        let Response::Feeds { feeds, .. } = respond_as(
            &mut hub,
            Pusher::new(&user.parse().unwrap(), &NoKeyring),
            Request::Feeds {
                from: "x".parse().unwrap(),
                only: None,
                certificates: false,
            },
        )
        .unwrap() else {
            panic!()
        };
        assert!(feeds.iter().all(|h| h.feed != notes), "{user}: {feeds:?}");
    }
    // Nobody writes into it: not a note, not a member, not the folder record brought back.
    ann_dev
        .create(&notes, id("n2"), draft("late"), &ann, t(4))
        .unwrap();
    assert_eq!(
        push(&mut hub, "ann", &notes, changes(&ann_dev, &notes)),
        [(MergeOutcome::Unchanged, true); 2]
    );
    let mut revived = replica("ann-dev2");
    revived
        .create(
            &info,
            record.clone(),
            folder_record(&folder, "back"),
            &actor("ann", "ann-dev2"),
            t(9),
        )
        .unwrap();
    assert_eq!(
        push(&mut hub, "ann", &info, changes(&revived, &info)),
        [(MergeOutcome::Unchanged, true)]
    );
    ann_dev
        .create(
            &members,
            id("cy"),
            member("cy", Role::Reader, InvitationState::Invited),
            &ann,
            t(5),
        )
        .unwrap();
    assert!(push(&mut hub, "ann", &members, changes(&ann_dev, &members))
        .iter()
        .all(|(_, refused)| *refused));
    assert!(guard::folder_deleted(hub.store(), &folder).unwrap());
}

/// The owner record founding `folder` for `user`, written on a device of `user`.
fn founding(folder: &FolderId, user: &str) -> (FeedKey, Vec<Entry>) {
    let members = FeedKey::members(folder);
    let mut dev = replica(&format!("{user}-dev"));
    dev.create(
        &members,
        id(user),
        member(user, Role::Owner, InvitationState::Active),
        &actor(user, &format!("{user}-dev")),
        t(0),
    )
    .unwrap();
    let entries = changes(&dev, &members);
    (members, entries)
}

/// Founding a folder tells no one whether a folder exists: only its founder (the user its id
/// names) may found it, and anyone else gets one answer for an existing folder and a missing
/// one.
#[test]
fn trying_to_found_a_folder_is_no_oracle_of_its_existence() {
    let mut hub = replica("hub");
    let secret: FolderId = "secret@ann".parse().unwrap();
    let (members, entries) = founding(&secret, "ann");
    assert_eq!(
        push(&mut hub, "ann", &members, entries),
        [(MergeOutcome::Added, false)]
    );
    let answer = |hub: &mut Replica<MemoryStore>, folder: &str| {
        let (members, entries) = founding(&folder.parse().unwrap(), "carol");
        let req = Request::Push {
            from: "carol-dev".parse().unwrap(),
            feed: members,
            entries,
        };
        let who: UserId = "carol".parse().unwrap();
        match respond_as(hub, Pusher::new(&who, &NoKeyring), req).unwrap() {
            Response::Pushed { results, .. } => (
                results[0].outcome,
                results[0].code.clone(),
                results[0].refused.clone(),
            ),
            other => panic!("{other:?}"),
        }
    };
    let existing = answer(&mut hub, "secret@ann");
    let missing = answer(&mut hub, "nothing@ann");
    let unbound = answer(&mut hub, "nothing");
    assert_eq!(existing.1.as_deref(), Some("not_found"));
    let same = |a: &(MergeOutcome, Option<String>, Option<String>), f: &str| {
        (a.0, a.1.clone(), a.2.as_ref().map(|r| r.replace(f, "F")))
    };
    assert_eq!(same(&existing, "secret@ann"), same(&missing, "nothing@ann"));
    assert_eq!(same(&existing, "secret@ann"), same(&unbound, "nothing"));
    // Her own folder: carol founds it.
    assert_eq!(answer(&mut hub, "mine@carol").1, None);
    // And bob cannot found a folder in ann's name by signing its records himself.
    let (members, entries) = founding(&"forged@ann".parse().unwrap(), "bob");
    assert_eq!(
        push(&mut hub, "ann", &members, entries),
        [(MergeOutcome::Unchanged, true)]
    );
}

/// In a page pulled from a peer, a new folder's records are judged as their signer's: with no
/// keyring every item counts as the relaying user's, who founds only folders naming them.
#[test]
fn a_pulled_page_founds_a_folder_only_with_its_founders_records() {
    let relay: UserId = "bob".parse().unwrap();
    let judge = |folder: &str, pusher: Pusher<'_>| {
        let mut dev = replica("erin-dev");
        let (members, entries) = founding(&folder.parse().unwrap(), "bob");
        let judged =
            mesh_core::sync::guard::push(&mut dev, pusher, None, &members, entries).unwrap();
        judged[0].refused.as_ref().map(|e| e.code())
    };
    let pulled = Pusher::new(&relay, &NoKeyring).pulled();
    assert_eq!(judge("x@bob", pulled), None);
    assert_eq!(judge("x@ann", pulled), Some(ErrorCode::PermissionDenied));
    assert_eq!(judge("legacy", pulled), Some(ErrorCode::PermissionDenied));
    // Pushed rather than pulled, the same page is answered as a folder bob cannot see.
    let pushed = Pusher::new(&relay, &NoKeyring);
    assert_eq!(judge("x@ann", pushed), Some(ErrorCode::NotFound));
}

/// A user asking about a few feeds by name is answered from those feeds alone, looked up by
/// key, and one asking about every feed from their own folders' feeds (neither goes through
/// every feed the hub holds); both still see only what they may read.
#[test]
fn feeds_asked_about_by_name_are_looked_up_by_key_and_checked() {
    let mut hub = replica("hub");
    let mine: FolderId = "mine@ann".parse().unwrap();
    let theirs: FolderId = "theirs@bob".parse().unwrap();
    for (folder, user) in [(&mine, "ann"), (&theirs, "bob")] {
        let (members, entries) = founding(folder, user);
        assert_eq!(
            push(&mut hub, user, &members, entries),
            [(MergeOutcome::Added, false)]
        );
    }
    let mut hub = Replica::new(Unlisted(hub.into_store()));
    let ask = |only| Request::Feeds {
        from: "ann-dev".parse().unwrap(),
        only,
        certificates: false,
    };
    let Response::Feeds { feeds, .. } = respond_as(
        &mut hub,
        Pusher::new(&"ann".parse().unwrap(), &NoKeyring),
        ask(Some(vec![
            FeedKey::members(&theirs),
            FeedKey::members(&mine),
            FeedKey::members(&"nowhere@ann".parse().unwrap()),
        ])),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        feeds.iter().map(|h| h.feed.clone()).collect::<Vec<_>>(),
        [FeedKey::members(&mine)]
    );
    // Asking about every feed goes through the asker's own folders, found by the store's
    // index of member records: the other users' are never gone through either.
    let Response::Feeds { feeds, .. } = respond_as(
        &mut hub,
        Pusher::new(&"ann".parse().unwrap(), &NoKeyring),
        ask(None),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        feeds.iter().map(|h| h.feed.clone()).collect::<Vec<_>>(),
        [FeedKey::members(&mine)]
    );
}

/// A pushed version that clears the conflicts an entry holds here is judged `resolved`;
/// the conflicting edits before it are not.
#[test]
fn a_pushed_resolution_is_judged_resolved() {
    use mesh_core::replica::Resolution;
    use mesh_core::sync::guard;
    let folder: FolderId = "f@ann".parse().unwrap();
    let (members, founders) = founding(&folder, "ann");
    let notes = FeedKey::folder(folder.clone(), "notes".parse().unwrap());
    let mut hub = replica("hub");
    push(&mut hub, "ann", &members, founders);
    let (mut one, mut two) = (replica("ann-dev"), replica("ann-dev2"));
    let (on_one, on_two) = (actor("ann", "ann-dev"), actor("ann", "ann-dev2"));
    one.create(&notes, id("n1"), draft("note"), &on_one, t(1))
        .unwrap();
    two.merge(&notes, changes(&one, &notes).remove(0), None)
        .unwrap();
    one.update(&notes, &id("n1"), draft("one"), &on_one, t(2))
        .unwrap();
    two.update(&notes, &id("n1"), draft("two"), &on_two, t(3))
        .unwrap();
    let ann: UserId = "ann".parse().unwrap();
    let judge = |hub: &mut Replica<MemoryStore>, entry: Entry| {
        let from = "ann-dev".parse().unwrap();
        let pusher = Pusher::new(&ann, &NoKeyring);
        let j = guard::push(hub, pusher, Some(&from), &notes, vec![entry]).unwrap();
        assert!(j[0].refused.is_none(), "{j:?}");
        (j[0].outcome, j[0].resolved)
    };
    let first = changes(&one, &notes).remove(0);
    assert_eq!(judge(&mut hub, first), (MergeOutcome::Added, false));
    let second = changes(&two, &notes).remove(0);
    assert_eq!(judge(&mut hub, second), (MergeOutcome::Conflict, false));
    let held = hub.get(&notes, &id("n1")).unwrap().unwrap();
    one.merge(&notes, held, None).unwrap();
    one.resolve(&notes, &id("n1"), Resolution::Pick(0), &on_one, t(4))
        .unwrap();
    let resolution = changes(&one, &notes).remove(0);
    assert_eq!(judge(&mut hub, resolution), (MergeOutcome::Updated, true));
}
