//! Verifiable writes: signatures, certificates, and every version authorized as its signer's
//! write, on a replica serving several users through the guard (the code path of the
//! in-process hub and of the HTTP hub's sync endpoint).

use mesh_core::content::JsonContent;
use mesh_core::feedsync::{HistoryItem, MergeOutcome, Version};
use mesh_core::id::{DeviceId, UserId};
use mesh_core::model::{Entry, EntryDraft, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{Cursor, MemoryStore};
use mesh_core::sync::guard::Pusher;
use mesh_core::sync::{
    respond_as, FeedFilter, Request, Response, SessionConfig, SessionEvent, Step, SyncReport,
    SyncSession,
};
use mesh_core::time::Timestamp;
use mesh_core::trust::{
    data_digest, seal_version, signing_bytes, DeviceCertificate, KeyStatus, Keyring, MemoryKeyring,
    Revocation, SecretKey,
};
use mesh_core::ErrorCode;

use crate::common::*;

const USERS: &[(&str, Role, InvitationState)] = &[
    ("ann", Role::Owner, InvitationState::Active),
    ("bob", Role::Reader, InvitationState::Active),
    ("carol", Role::Reader, InvitationState::Invited),
    ("dave", Role::Reader, InvitationState::Declined),
    ("erin", Role::Author, InvitationState::Active),
    ("frank", Role::Full, InvitationState::Active),
];

pub fn member_draft(user: &str, role: Role, state: InvitationState, by: &str) -> EntryDraft {
    let m = Member {
        user: user.parse().unwrap(),
        role,
        state,
        invited_by: by.parse().unwrap(),
        invited_at: t(0),
    };
    EntryDraft {
        title: user.into(),
        content: JsonContent::from_serialize(&m).unwrap(),
        media: None,
    }
}

/// A certificate by `by` for `user`'s `device`, certifying the key of `key_user`, valid from
/// `t(from)` to `t(to)`.
fn certify(
    by: &SecretKey,
    user: &str,
    device: &str,
    key_user: &str,
    from: i64,
    to: i64,
) -> DeviceCertificate {
    DeviceCertificate::issue(
        by,
        user.parse().unwrap(),
        dev(device),
        key_of(key_user).public(),
        t(from),
        t(to),
    )
}

fn key_of(user: &str) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..user.len()].copy_from_slice(user.as_bytes());
    SecretKey::from_seed(seed)
}

/// A folder `f` on a hub replica, with one device per user of [`USERS`] (`<user>-dev`),
/// each certified by the hub's authority, every membership in the state the table says, and
/// one note by ann (`n1`) and one by erin (`e1`).
pub struct World {
    pub authority: SecretKey,
    pub ring: MemoryKeyring,
    pub hub: Replica<MemoryStore>,
    pub members: FeedKey,
    pub notes: FeedKey,
    pub clock: i64,
}

impl World {
    pub fn new() -> Self {
        let authority = SecretKey::from_seed([9; 32]);
        let mut ring = MemoryKeyring::new(authority.public());
        for (user, _, _) in USERS {
            ring.add(certify(
                &authority,
                user,
                &format!("{user}-dev"),
                user,
                -10,
                1_000_000,
            ))
            .unwrap();
        }
        let folder = "f@ann".parse().unwrap();
        let mut w = World {
            authority,
            ring,
            hub: replica("hub"),
            members: FeedKey::members(&folder),
            notes: FeedKey::folder(folder, "notes".parse().unwrap()),
            clock: 0,
        };
        let members = w.members.clone();
        // ann creates the folder and invites everyone; the others answer.
        let mut ann = w.device("ann");
        w.write(&mut ann, "ann", &members, |r, a, now| {
            r.create(
                &members,
                id("ann"),
                member_draft("ann", Role::Owner, InvitationState::Active, "ann"),
                a,
                now,
            )
        });
        for (user, role, _) in &USERS[1..] {
            w.write(&mut ann, "ann", &members, |r, a, now| {
                r.create(
                    &members,
                    id(user),
                    member_draft(user, *role, InvitationState::Invited, "ann"),
                    a,
                    now,
                )
            });
        }
        for (user, role, state) in &USERS[1..] {
            if *state != InvitationState::Invited {
                let mut d = w.device(user);
                w.write(&mut d, user, &members, |r, a, now| {
                    r.update(
                        &members,
                        &id(user),
                        member_draft(user, *role, *state, "ann"),
                        a,
                        now,
                    )
                });
            }
        }
        let notes = w.notes.clone();
        w.write(&mut ann, "ann", &notes, |r, a, now| {
            r.create(&notes, id("n1"), draft("ann's note"), a, now)
        });
        let mut erin = w.device("erin");
        w.write(&mut erin, "erin", &notes, |r, a, now| {
            r.create(&notes, id("e1"), draft("erin's note"), a, now)
        });
        w
    }

    /// A replica of `user`'s device, signing with its key, holding everything the hub holds.
    pub fn device(&self, user: &str) -> Replica<MemoryStore> {
        let mut r = replica(&format!("{user}-dev"));
        r.set_signer(key_of(user));
        self.refresh(&mut r);
        r
    }

    /// Brings a device up to date with the hub.
    pub fn refresh(&self, r: &mut Replica<MemoryStore>) {
        for feed in [&self.members, &self.notes] {
            let all = self.all(feed);
            r.merge_batch(feed, all, None).unwrap();
        }
    }

    pub fn all(&self, feed: &FeedKey) -> Vec<Entry> {
        self.hub
            .changes_since(feed, Cursor::ZERO, 1000)
            .unwrap()
            .changes
            .into_iter()
            .map(|c| c.entry)
            .collect()
    }

    pub fn now(&mut self) -> Timestamp {
        self.clock += 1;
        t(self.clock)
    }

    /// Writes on a device and pushes the written entry as `user`; the push must merge.
    pub fn write(
        &mut self,
        r: &mut Replica<MemoryStore>,
        user: &str,
        feed: &FeedKey,
        f: impl FnOnce(
            &mut Replica<MemoryStore>,
            &Actor,
            Timestamp,
        ) -> mesh_core::Result<mesh_core::replica::Written>,
    ) -> Entry {
        let now = self.now();
        let written = f(r, &actor(user, &format!("{user}-dev")), now).unwrap();
        let got = self.push(user, feed, vec![written.entry.clone()]);
        assert!(got[0].1.is_none(), "honest write refused: {got:?}");
        written.entry
    }

    /// `user`'s device `r` writes a new version of entry `name` titled `title` (not pushed).
    pub fn edit(
        &mut self,
        r: &mut Replica<MemoryStore>,
        user: &str,
        feed: &FeedKey,
        name: &str,
        title: &str,
    ) -> Entry {
        let now = self.now();
        r.update(
            feed,
            &id(name),
            draft(title),
            &actor(user, &format!("{user}-dev")),
            now,
        )
        .unwrap()
        .entry
    }

    /// Pushes as `user` through the guard: (outcome, refusal code) per entry.
    pub fn push(
        &mut self,
        user: &str,
        feed: &FeedKey,
        entries: Vec<Entry>,
    ) -> Vec<(MergeOutcome, Option<String>)> {
        let req = Request::Push {
            from: format!("{user}-replica").parse().unwrap(),
            feed: feed.clone(),
            entries,
        };
        let user: UserId = user.parse().unwrap();
        match respond_as(&mut self.hub, Pusher::new(&user, &self.ring), req).unwrap() {
            Response::Pushed { results, .. } => {
                results.into_iter().map(|r| (r.outcome, r.code)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    pub fn member(&self, user: &str) -> Option<Member> {
        self.hub
            .get(&self.members, &id(user))
            .unwrap()
            .filter(|e| !e.is_deleted())
            .map(|e| e.content.content.decode().unwrap())
    }

    pub fn hub_entry(&self, feed: &FeedKey, name: &str) -> Entry {
        self.hub.get(feed, &id(name)).unwrap().unwrap()
    }
}

fn code(c: ErrorCode) -> Option<String> {
    Some(c.as_str().to_string())
}

/// `entry` with `extra` added as a conflicting version.
fn with_conflict(mut entry: Entry, extra: &Entry) -> Entry {
    entry.conflicts.push(Version {
        sync: extra.sync.clone(),
        content: extra.content.clone(),
    });
    entry
}

// ---- attacks from the issue, each refused ----------------------------------------------------

#[test]
fn a_hidden_conflict_cannot_make_a_reader_owner() {
    let mut w = World::new();
    let members = w.members.clone();
    // bob (Reader) signs a version of his own record as Owner with a high count, and hides it
    // as a conflict of an honest-looking tombstone of his record (leaving).
    let mut a = w.device("bob");
    let mut b = w.device("bob");
    let now = w.now();
    let owner = a
        .update(
            &members,
            &id("bob"),
            member_draft("bob", Role::Owner, InvitationState::Active, "ann"),
            &actor("bob", "bob-dev"),
            now,
        )
        .unwrap()
        .entry;
    let leave = b
        .delete(&members, &id("bob"), &actor("bob", "bob-dev"), now)
        .unwrap()
        .entry;
    let forged = with_conflict(leave.clone(), &owner);
    assert_eq!(
        w.push("bob", &members, vec![forged]),
        [(MergeOutcome::Unchanged, code(ErrorCode::PermissionDenied))]
    );
    assert_eq!(w.member("bob").unwrap().role, Role::Reader);
    // Alone, the leave is his right.
    assert_eq!(w.push("bob", &members, vec![leave])[0].1, None);
    assert!(w.member("bob").is_none());
    assert_eq!(w.member("ann").unwrap().role, Role::Owner);
}

#[test]
fn an_accept_cannot_carry_a_forged_owner_version() {
    let mut w = World::new();
    let members = w.members.clone();
    let (mut a, mut b) = (w.device("carol"), w.device("carol"));
    let now = w.now();
    let me = actor("carol", "carol-dev");
    let accept = a
        .update(
            &members,
            &id("carol"),
            member_draft("carol", Role::Reader, InvitationState::Active, "ann"),
            &me,
            now,
        )
        .unwrap()
        .entry;
    let owner = b
        .update(
            &members,
            &id("carol"),
            member_draft("carol", Role::Owner, InvitationState::Active, "ann"),
            &me,
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        w.push(
            "carol",
            &members,
            vec![with_conflict(accept.clone(), &owner)]
        )[0]
        .1,
        code(ErrorCode::PermissionDenied)
    );
    assert_eq!(w.member("carol").unwrap().state, InvitationState::Invited);
    assert_eq!(w.push("carol", &members, vec![accept])[0].1, None);
    assert_eq!(w.member("carol").unwrap().role, Role::Reader);
}

#[test]
fn a_declined_invitee_cannot_make_itself_owner() {
    let mut w = World::new();
    let members = w.members.clone();
    let mut d = w.device("dave");
    let now = w.now();
    let owner = d
        .update(
            &members,
            &id("dave"),
            member_draft("dave", Role::Owner, InvitationState::Active, "ann"),
            &actor("dave", "dave-dev"),
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        w.push("dave", &members, vec![owner])[0].1,
        code(ErrorCode::NotFound) // a declined invitee cannot even see the members feed
    );
    assert_eq!(w.member("dave").unwrap().state, InvitationState::Declined);
}

#[test]
fn noconflicts_cannot_discard_a_version_the_pusher_never_saw() {
    let mut w = World::new();
    let notes = w.notes.clone();
    // ann and frank edit n1 concurrently: the hub keeps both.
    let (mut ann, mut frank) = (w.device("ann"), w.device("frank"));
    // frank's second device has seen neither edit.
    let mut f2 = w.device("frank");
    f2.set_signer(key_of("frank2"));
    let cert = certify(
        &w.authority,
        "frank",
        "frank-dev2",
        "frank2",
        -10,
        1_000_000,
    );
    w.ring.add(cert).unwrap();
    w.write(&mut ann, "ann", &notes, |r, a, now| {
        r.update(&notes, &id("n1"), draft("ann's edit"), a, now)
    });
    let theirs = {
        let now = w.now();
        frank
            .update(
                &notes,
                &id("n1"),
                draft("frank's edit"),
                &actor("frank", "frank-dev"),
                now,
            )
            .unwrap()
            .entry
    };
    assert_eq!(w.push("frank", &notes, vec![theirs])[0].1, None);
    assert_eq!(w.hub_entry(&notes, "n1").conflicts.len(), 1);
    // frank's second device writes a version that says `noconflicts` and wins by count: it
    // would drop both edits, which it does not know.
    let now = w.now();
    let mut v = f2
        .update(
            &notes,
            &id("n1"),
            draft("frank, again"),
            &actor("frank", "frank-dev2"),
            now,
        )
        .unwrap()
        .entry;
    v.sync.noconflicts = true;
    v.sync.updates = w.hub_entry(&notes, "n1").sync.updates + 1;
    v.sync.history[0].sequence = v.sync.updates;
    seal_version(
        &notes,
        &id("n1"),
        &mut v.sync.history,
        false,
        &v.content,
        &key_of("frank2"),
    );
    // The flag is not signed, so a signed version may not carry it at all.
    assert_eq!(
        w.push("frank", &notes, vec![v.clone()])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    // Written by a tool outside the mesh (unsigned, frank's own write): the merge would
    // discard both edits, which it does not know.
    v.sync.history[0].by = Some(dev("frank-tool"));
    v.sync.history[0].seal = None;
    assert_eq!(
        w.push("frank", &notes, vec![v.clone()])[0].1,
        code(ErrorCode::PermissionDenied)
    );
    let n1 = w.hub_entry(&notes, "n1");
    assert_eq!(n1.conflicts.len(), 1, "both edits are still there");
    // Nor may it make a later concurrent version vanish: a tool's version with the larger
    // count wins, and would drop the other silently.
    let mut tool = replica("tool");
    let me = actor("frank", "frank-tool");
    let now = w.now();
    tool.create(&notes, id("n9"), draft("tool"), &me, now)
        .unwrap();
    let mut v = tool
        .update(&notes, &id("n9"), draft("tool, again"), &me, now)
        .unwrap()
        .entry;
    v.sync.noconflicts = true;
    assert_eq!(w.push("frank", &notes, vec![v])[0].1, None);
    let mut ann = replica("ann-dev");
    ann.set_signer(key_of("ann"));
    let now = w.now();
    let late = ann
        .create(
            &notes,
            id("n9"),
            draft("ann's n9"),
            &actor("ann", "ann-dev"),
            now,
        )
        .unwrap()
        .entry;
    let got = w.push("ann", &notes, vec![late]);
    assert!(
        got[0].1.is_none() || got[0].1 == code(ErrorCode::PermissionDenied),
        "{got:?}"
    );
    if got[0].1.is_none() {
        let n9 = w.hub_entry(&notes, "n9");
        let kept = std::iter::once(&n9.content).chain(n9.conflicts.iter().map(|c| &c.content));
        assert!(
            kept.into_iter().any(|d| d.title == "ann's n9"),
            "silently dropped: {n9:?}"
        );
    }
}

#[test]
fn a_history_item_in_another_devices_name_is_refused_and_its_next_edit_lands() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut frank = w.device("frank");
    let mut edit = w.edit(&mut frank, "frank", &notes, "n1", "frank's edit");
    // A claim that ann's device already made its millionth update.
    edit.sync.history.push(HistoryItem::new(
        1_000_000,
        edit.sync.history[0].when,
        Some(dev("ann-dev")),
    ));
    assert_eq!(
        w.push("frank", &notes, vec![edit])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    // With the seal of another of ann's items copied onto it, still no.
    let mut edit = frank.get(&notes, &id("n1")).unwrap().unwrap();
    let mut stolen = w.hub_entry(&notes, "n1").sync.history[0].clone();
    stolen.sequence = 1_000_000;
    edit.sync.history.push(stolen);
    assert_eq!(
        w.push("frank", &notes, vec![edit])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    // ann's next honest edit is merged, not dropped as already known.
    let mut ann = w.device("ann");
    w.write(&mut ann, "ann", &notes, |r, a, now| {
        r.update(&notes, &id("n1"), draft("ann's edit"), a, now)
    });
    assert_eq!(w.hub_entry(&notes, "n1").content.title, "ann's edit");
}

#[test]
fn a_tombstone_planted_in_another_devices_name_is_refused() {
    let mut w = World::new();
    let notes = w.notes.clone();
    // erin (Author) makes a tombstone for a predictable id and claims frank's device wrote it.
    let mut erin = w.device("erin");
    let now = w.now();
    let mut planted = erin
        .create(
            &notes,
            id("frank-todo-1"),
            draft("x"),
            &actor("erin", "erin-dev"),
            now,
        )
        .unwrap()
        .entry;
    planted.sync.deleted = true;
    planted.sync.history[0].by = Some(dev("frank-dev"));
    assert_eq!(
        w.push("erin", &notes, vec![planted.clone()])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    // Signed by erin's key in frank's name: still no.
    planted.sync.history[0].seal = None;
    seal_version(
        &notes,
        &id("frank-todo-1"),
        &mut planted.sync.history,
        true,
        &planted.content,
        &key_of("erin"),
    );
    assert_eq!(
        w.push("erin", &notes, vec![planted])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    // frank's later create lands.
    let mut frank = w.device("frank");
    w.write(&mut frank, "frank", &notes, |r, a, now| {
        r.create(&notes, id("frank-todo-1"), draft("mine"), a, now)
    });
    assert_eq!(w.hub_entry(&notes, "frank-todo-1").content.title, "mine");
}

#[test]
fn a_tombstone_planted_under_ones_own_name_keeps_the_later_create() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut erin = w.device("erin");
    w.write(&mut erin, "erin", &notes, |r, a, now| {
        r.create(&notes, id("frank-todo-2"), draft("x"), a, now)?;
        r.delete(&notes, &id("frank-todo-2"), a, now)
    });
    // frank, who never saw it, creates the same id: his version is kept (winner or conflict).
    let mut frank = replica("frank-dev");
    frank.set_signer(key_of("frank"));
    let now = w.now();
    let mine = frank
        .create(
            &notes,
            id("frank-todo-2"),
            draft("mine"),
            &actor("frank", "frank-dev"),
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(w.push("frank", &notes, vec![mine])[0].1, None);
    let e = w.hub_entry(&notes, "frank-todo-2");
    let kept = std::iter::once(&e.content).chain(e.conflicts.iter().map(|c| &c.content));
    assert!(kept.into_iter().any(|d| d.title == "mine"), "{e:?}");
}

#[test]
fn the_author_of_an_entry_cannot_be_forged_through_sync() {
    let mut w = World::new();
    let notes = w.notes.clone();
    // erin (Author) creates an entry in ann's name.
    let mut erin = w.device("erin");
    let now = w.now();
    let mut e = erin
        .create(
            &notes,
            id("e2"),
            draft("by ann?"),
            &actor("erin", "erin-dev"),
            now,
        )
        .unwrap()
        .entry;
    e.content.author = "ann".parse().unwrap();
    e.sync.history[0].seal = None;
    seal_version(
        &notes,
        &id("e2"),
        &mut e.sync.history,
        false,
        &e.content,
        &key_of("erin"),
    );
    assert_eq!(
        w.push("erin", &notes, vec![e])[0].1,
        code(ErrorCode::PermissionDenied)
    );
    // frank (Full) takes over erin's entry by changing its author: refused too.
    let mut frank = w.device("frank");
    let mut e1 = w.edit(&mut frank, "frank", &notes, "e1", "mine now");
    e1.content.author = "frank".parse().unwrap();
    e1.sync.history[0].seal = None;
    seal_version(
        &notes,
        &id("e1"),
        &mut e1.sync.history,
        false,
        &e1.content,
        &key_of("frank"),
    );
    assert_eq!(
        w.push("frank", &notes, vec![e1])[0].1,
        code(ErrorCode::PermissionDenied)
    );
    assert_eq!(w.hub_entry(&notes, "e1").content.author.as_str(), "erin");
}

#[test]
fn only_the_invitee_accepts_or_declines() {
    let mut w = World::new();
    let members = w.members.clone();
    let mut frank = w.device("frank");
    let now = w.now();
    let accept = frank
        .update(
            &members,
            &id("carol"),
            member_draft("carol", Role::Reader, InvitationState::Active, "ann"),
            &actor("frank", "frank-dev"),
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        w.push("frank", &members, vec![accept])[0].1,
        code(ErrorCode::PermissionDenied)
    );
    // Not even the owner activates someone else's membership.
    let mut ann = w.device("ann");
    let now = w.now();
    let accept = ann
        .update(
            &members,
            &id("carol"),
            member_draft("carol", Role::Reader, InvitationState::Active, "ann"),
            &actor("ann", "ann-dev"),
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        w.push("ann", &members, vec![accept])[0].1,
        code(ErrorCode::PermissionDenied)
    );
    assert_eq!(w.member("carol").unwrap().state, InvitationState::Invited);
}

#[test]
fn a_folder_always_keeps_an_active_owner() {
    let mut w = World::new();
    let members = w.members.clone();
    let me = actor("ann", "ann-dev");
    for make in [
        |r: &mut Replica<MemoryStore>, members: &FeedKey, me: &Actor, now| {
            r.delete(members, &id("ann"), me, now)
        },
        |r: &mut Replica<MemoryStore>, members: &FeedKey, me: &Actor, now| {
            r.update(
                members,
                &id("ann"),
                member_draft("ann", Role::Full, InvitationState::Active, "ann"),
                me,
                now,
            )
        },
    ] {
        let mut ann = w.device("ann");
        let now = w.now();
        let e = make(&mut ann, &members, &me, now).unwrap().entry;
        assert_eq!(
            w.push("ann", &members, vec![e])[0].1,
            code(ErrorCode::PermissionDenied)
        );
        assert_eq!(w.member("ann").unwrap().role, Role::Owner);
    }
    // Two demotions in one batch cannot leave the folder ownerless either: make frank an
    // owner, then push both owners' demotions together.
    let mut ann = w.device("ann");
    w.write(&mut ann, "ann", &members, |r, a, now| {
        r.update(
            &members,
            &id("frank"),
            member_draft("frank", Role::Owner, InvitationState::Active, "ann"),
            a,
            now,
        )
    });
    let mut ann = w.device("ann");
    let now = w.now();
    let d1 = ann
        .update(
            &members,
            &id("frank"),
            member_draft("frank", Role::Full, InvitationState::Active, "ann"),
            &me,
            now,
        )
        .unwrap()
        .entry;
    let d2 = ann
        .update(
            &members,
            &id("ann"),
            member_draft("ann", Role::Full, InvitationState::Active, "ann"),
            &me,
            now,
        )
        .unwrap()
        .entry;
    let got = w.push("ann", &members, vec![d1, d2]);
    assert_eq!(got.iter().filter(|g| g.1.is_none()).count(), 1, "{got:?}");
    let owners = ["ann", "frank"]
        .iter()
        .filter(|u| w.member(u).unwrap().role == Role::Owner)
        .count();
    assert_eq!(owners, 1);
}

#[test]
fn an_update_count_at_the_end_of_the_counter_is_refused() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut frank = w.device("frank");
    let mut e = w.edit(&mut frank, "frank", &notes, "n1", "frozen?");
    e.sync.updates = u32::MAX;
    e.sync.history[0].sequence = u32::MAX;
    e.sync.history[0].seal = None;
    seal_version(
        &notes,
        &id("n1"),
        &mut e.sync.history,
        false,
        &e.content,
        &key_of("frank"),
    );
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::LimitExceeded)
    );
    // Raising the count without signing it is refused as well.
    let mut e = frank.get(&notes, &id("n1")).unwrap().unwrap();
    e.sync.updates += 100;
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    let mut ann = w.device("ann");
    w.write(&mut ann, "ann", &notes, |r, a, now| {
        r.update(&notes, &id("n1"), draft("still editable"), a, now)
    });
}

#[test]
fn item_shapes_are_bounded() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut e = w.hub_entry(&notes, "n1");
    let mut frank = w.device("frank");
    for i in 0..=mesh_core::feedsync::limits::MAX_CONFLICTS {
        let now = w.now();
        let v = frank
            .update(
                &notes,
                &id("n1"),
                draft(&format!("v{i}")),
                &actor("frank", "frank-dev"),
                now,
            )
            .unwrap()
            .entry;
        e.conflicts.push(Version {
            sync: v.sync,
            content: v.content,
        });
    }
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::LimitExceeded)
    );
}

// ---- relaying, interop, signatures -----------------------------------------------------------

#[test]
fn a_reader_relays_an_owners_signed_change() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut ann = w.device("ann");
    let edit = w.edit(&mut ann, "ann", &notes, "n1", "ann's edit");
    assert_eq!(
        w.push("bob", &notes, vec![edit]),
        [(MergeOutcome::Updated, None)]
    );
    // bob's own edit is refused.
    let mut bob = w.device("bob");
    let own = w.edit(&mut bob, "bob", &notes, "n1", "bob's edit");
    assert_eq!(
        w.push("bob", &notes, vec![own])[0].1,
        code(ErrorCode::PermissionDenied)
    );
}

#[test]
fn foreign_unsigned_items_count_as_the_pushers_writes() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut tool = replica("tool");
    tool.merge_batch(&notes, w.all(&notes), None).unwrap();
    let now = w.now();
    let e = tool
        .update(
            &notes,
            &id("n1"),
            draft("from another tool"),
            &actor("frank", "feedsync-tool"),
            now,
        )
        .unwrap()
        .entry;
    assert!(e.sync.history[0].seal.is_none());
    assert_eq!(
        w.push("bob", &notes, vec![e.clone()])[0].1,
        code(ErrorCode::PermissionDenied)
    );
    assert_eq!(w.push("frank", &notes, vec![e])[0].1, None);
    // A device of the mesh without a certificate is not foreign: its items are refused.
    w.ring.register(dev("new-dev"));
    let now = w.now();
    let e = tool
        .update(
            &notes,
            &id("n1"),
            draft("x"),
            &actor("frank", "new-dev"),
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::UntrustedCertificate)
    );
}

/// Every signed field, changed after signing, makes the signature fail.
#[test]
fn tampering_with_any_signed_field_is_refused() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut frank = w.device("frank");
    let good = w.edit(&mut frank, "frank", &notes, "n1", "frank's edit");
    type Tamper = fn(&mut Entry);
    let tampers: &[(&str, Tamper)] = &[
        ("title", |e| e.content.title.push('!')),
        ("content", |e| {
            e.content.content = JsonContent::from(&serde_json::json!({"x": 1}))
        }),
        ("published", |e| {
            e.content.published = e.content.published.plus_secs(1)
        }),
        ("deleted", |e| e.sync.deleted = true),
        ("sequence", |e| {
            e.sync.history[0].sequence += 1;
            e.sync.updates += 1;
        }),
        ("when", |e| {
            e.sync.history[0].when = e.sync.history[0].when.map(|w| w.plus_secs(1))
        }),
        ("by", |e| {
            e.sync.history[0].by = Some("erin-dev".parse().unwrap())
        }),
        ("seal author", |e| {
            e.sync.history[0].seal.as_mut().unwrap().author = "erin".parse().unwrap()
        }),
        ("author", |e| e.content.author = "erin".parse().unwrap()),
    ];
    for (what, tamper) in tampers {
        let mut e = good.clone();
        tamper(&mut e);
        let got = w.push("frank", &notes, vec![e]);
        assert_eq!(got[0].1, code(ErrorCode::InvalidSignature), "{what}");
    }
    // The same version in another feed or under another id does not verify either.
    let other = FeedKey::folder("f@ann".parse().unwrap(), "other".parse().unwrap());
    assert_eq!(
        w.push("frank", &other, vec![good.clone()])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    let mut moved = good.clone();
    moved.sync.id = id("n2");
    assert_eq!(
        w.push("frank", &notes, vec![moved])[0].1,
        code(ErrorCode::InvalidSignature)
    );
    assert_eq!(
        w.push("frank", &notes, vec![good]),
        [(MergeOutcome::Updated, None)]
    );
}

#[test]
fn certificates_from_elsewhere_expired_or_revoked_are_refused() {
    let mut w = World::new();
    let notes = w.notes.clone();
    // Another authority's certificate never enters the keyring.
    let rogue = SecretKey::from_seed([66; 32]);
    let err = w
        .ring
        .add(certify(&rogue, "ann", "ann-dev2", "zed", 0, 100))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedCertificate);
    assert_eq!(w.ring.lookup(&dev("ann-dev2")), KeyStatus::Foreign);
    // A certificate that ended before the write.
    w.ring
        .add(certify(&w.authority, "frank", "old-dev", "old", -100, -50))
        .unwrap();
    let mut old = w.device("frank");
    old.set_signer(key_of("old"));
    let now = w.now();
    let e = old
        .update(
            &notes,
            &id("n1"),
            draft("late"),
            &actor("frank", "old-dev"),
            now,
        )
        .unwrap()
        .entry;
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::UntrustedCertificate)
    );
    // A revoked device's new versions are refused; what it wrote before stays.
    let mut frank = w.device("frank");
    w.write(&mut frank, "frank", &notes, |r, a, now| {
        r.update(&notes, &id("n1"), draft("before"), a, now)
    });
    let at = w.now();
    w.ring.revoke(&dev("frank-dev"), at);
    let e = w.edit(&mut frank, "frank", &notes, "n1", "after");
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::Revoked)
    );
    assert_eq!(w.hub_entry(&notes, "n1").content.title, "before");
    // ann still builds on frank's earlier version.
    let mut ann = w.device("ann");
    w.write(&mut ann, "ann", &notes, |r, a, now| {
        r.update(&notes, &id("n1"), draft("ann after"), a, now)
    });
}

#[test]
fn a_signature_by_the_wrong_device_is_refused() {
    let mut w = World::new();
    let notes = w.notes.clone();
    // erin's key signs an item that says frank's device wrote it.
    let mut forger = w.device("frank");
    forger.set_signer(key_of("erin"));
    let e = w.edit(&mut forger, "frank", &notes, "n1", "who?");
    assert_eq!(
        w.push("frank", &notes, vec![e])[0].1,
        code(ErrorCode::InvalidSignature)
    );
}

/// The worked example of `docs/protocol.md` ("Signed versions"): the bytes, digest and
/// signature printed there are what this code computes.
#[test]
fn the_worked_example_of_the_protocol_docs_holds() {
    let feed: FeedKey = "folder:f1/notes".parse().unwrap();
    let author: UserId = "ann".parse().unwrap();
    let when = Timestamp::from_unix(1_700_000_000).unwrap();
    let data = mesh_core::model::EntryData {
        title: "Hi".into(),
        content: JsonContent::from(&serde_json::json!({"a": 1})),
        media: None,
        author: author.clone(),
        published: when,
        updated: when,
    };
    let digest = data_digest(&data);
    let item = HistoryItem::new(1, Some(when), Some("laptop".parse::<DeviceId>().unwrap()));
    let bytes = signing_bytes(&feed, &id("n1"), &item, false, &author, &digest);
    let key = SecretKey::from_seed([1; 32]);
    let sig = key.sign(&bytes);
    let doc = include_str!("../../../docs/protocol.md");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    for (what, value) in [
        ("public key", key.public().to_string()),
        ("digest", digest.to_string()),
        ("message", hex),
        ("signature", sig.to_string()),
    ] {
        assert!(
            doc.contains(&value),
            "docs/protocol.md lacks the {what} {value}"
        );
    }
}

#[test]
fn compacted_histories_keep_their_signatures() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut frank = Replica::with_options(
        MemoryStore::new("frank-dev".parse().unwrap()),
        mesh_core::replica::ReplicaOptions {
            compact_history: true,
        },
    );
    frank.set_signer(key_of("frank"));
    w.refresh(&mut frank);
    let mut last = None;
    for i in 0..5 {
        let now = w.now();
        let e = frank
            .update(
                &notes,
                &id("n1"),
                draft(&format!("v{i}")),
                &actor("frank", "frank-dev"),
                now,
            )
            .unwrap()
            .entry;
        last = Some(e);
    }
    let e = last.unwrap();
    // One item per writer plus the topmost: ann's creation and frank's latest.
    assert_eq!(e.sync.history.len(), 2);
    assert!(e.sync.history.iter().all(|h| h.seal.is_some()));
    assert_eq!(
        w.push("frank", &notes, vec![e]),
        [(MergeOutcome::Updated, None)]
    );
    mesh_core::trust::verify_entry(&w.ring, &notes, None, &w.hub_entry(&notes, "n1")).unwrap();
}

// ---- pulling from a peer ---------------------------------------------------------------------

/// Runs a whole pull-and-push session of `local` (a device of `user`) against `peer` (a device
/// of `peer_user` serving through the guard); when `check` is set, what `local` receives is
/// judged as `peer_user`'s push.
fn session_with_peer(
    w: &World,
    local: &mut Replica<MemoryStore>,
    user: &str,
    peer: &mut Replica<MemoryStore>,
    peer_user: &str,
    check: bool,
) -> (SyncReport, Vec<SessionEvent>) {
    let (user, peer_user): (UserId, UserId) = (user.parse().unwrap(), peer_user.parse().unwrap());
    let mut s = SyncSession::new(SessionConfig::new("peer".parse().unwrap()));
    let mut events = Vec::new();
    for _ in 0..1000 {
        match s.poll(local).unwrap() {
            Step::Send(req) => {
                let resp = respond_as(peer, Pusher::new(&user, &w.ring), req).unwrap();
                let relayer = check.then(|| Pusher::new(&peer_user, &w.ring));
                events.extend(s.receive_from(local, resp, relayer).unwrap());
            }
            Step::Done(report) => return (report, events),
        }
    }
    panic!("the session did not finish");
}

#[test]
fn a_device_accepts_from_a_peer_only_what_the_signers_may_write() {
    let mut w = World::new();
    let notes = w.notes.clone();
    let mut erin = w.device("erin");
    // bob (a Reader) holds ann's signed new note, his own edit of ann's note (not his to make),
    // and a copy of erin's note whose signed title he changed.
    let mut bob = w.device("bob");
    let mut ann = w.device("ann");
    let now = w.now();
    let relayed = ann
        .create(
            &notes,
            id("n2"),
            draft("ann's second"),
            &actor("ann", "ann-dev"),
            now,
        )
        .unwrap()
        .entry;
    bob.merge_batch(&notes, vec![relayed], None).unwrap();
    w.edit(&mut bob, "bob", &notes, "n1", "bob was here");
    let mut tampered = bob.get(&notes, &id("e1")).unwrap().unwrap();
    tampered.content.title = "erin never wrote this".into();
    tampered.sync.history[0].sequence += 1;
    tampered.sync.updates += 1;
    bob.merge_batch(&notes, vec![tampered], None).unwrap();

    let (report, events) = session_with_peer(&w, &mut erin, "erin", &mut bob, "bob", true);
    let title =
        |r: &Replica<MemoryStore>, n: &str| r.get(&notes, &id(n)).unwrap().unwrap().content.title;
    assert_eq!(
        title(&erin, "n2"),
        "ann's second",
        "a signed write relayed by a Reader merges"
    );
    assert_eq!(title(&erin, "n1"), "ann's note");
    assert_eq!(title(&erin, "e1"), "erin's note");
    let rejected: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Rejected { id, code, .. } => Some((id.to_string(), code.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(report.rejected, 2, "{events:?}");
    assert!(
        rejected.contains(&("n1".into(), "permission_denied".into())),
        "{rejected:?}"
    );
    assert!(
        rejected.contains(&("e1".into(), "invalid_signature".into())),
        "{rejected:?}"
    );
    // The cursor moved past the page: the refused versions are not asked for again.
    let (again, _) = session_with_peer(&w, &mut erin, "erin", &mut bob, "bob", true);
    assert_eq!((again.received, again.rejected), (0, 0));

    // Without the check, the same session would have let bob's edit in.
    let mut trusting = w.device("erin");
    session_with_peer(&w, &mut trusting, "erin", &mut bob, "bob", false);
    assert_eq!(title(&trusting, "n1"), "bob was here");
}

#[test]
fn a_peer_cannot_found_a_folder_with_anything_but_its_members() {
    let mut w = World::new();
    // bob's device holds notes of a folder erin does not know, and no members for it: only a
    // folder's members and info feeds may found it on erin's device.
    let mut bob = w.device("bob");
    let g: mesh_core::id::FolderId = "g".parse().unwrap();
    let (members, notes) = (
        FeedKey::members(&g),
        FeedKey::folder(g, "notes".parse().unwrap()),
    );
    let now = w.now();
    let bob_actor = actor("bob", "bob-dev");
    bob.create(
        &notes,
        id("x"),
        draft("a note in a folder nobody made"),
        &bob_actor,
        now,
    )
    .unwrap();
    let mut erin = w.device("erin");
    // bob's side answers as a hostile peer would, whatever its guard says.
    let peer_user: UserId = "bob".parse().unwrap();
    let entries = bob.changes_since(&notes, Cursor::ZERO, 10).unwrap().changes;
    let mut config = SessionConfig::new("peer".parse().unwrap());
    config.feeds = FeedFilter::Only([notes.clone()].into());
    let mut s = SyncSession::new(config);
    let Step::Send(Request::Feeds { .. }) = s.poll(&mut erin).unwrap() else {
        panic!("a session starts with feeds");
    };
    let head = entries.last().unwrap().seq;
    let feeds = Response::Feeds {
        replica: "bob-dev".parse().unwrap(),
        feeds: vec![mesh_core::store::FeedHead {
            feed: notes.clone(),
            head,
            entries: 1,
        }],
        epoch: None,
        revocations: Vec::new(),
        certificates: Vec::new(),
    };
    s.receive_from(&mut erin, feeds, Some(Pusher::new(&peer_user, &w.ring)))
        .unwrap();
    let Step::Send(Request::Pull { .. }) = s.poll(&mut erin).unwrap() else {
        panic!("a pull of g's notes");
    };
    let changes = Response::Changes {
        feed: notes.clone(),
        entries: entries.into_iter().map(|c| c.entry).collect(),
        next: head,
        more: false,
    };
    let events = s
        .receive_from(&mut erin, changes, Some(Pusher::new(&peer_user, &w.ring)))
        .unwrap();
    assert!(
        matches!(&events[..], [SessionEvent::Rejected { code, .. }] if code == "not_found"),
        "{events:?}"
    );
    assert!(erin.get(&notes, &id("x")).unwrap().is_none());
    assert!(erin.get(&members, &id("bob")).unwrap().is_none());
}

/// A device learns a new folder from a peer who did not found it: the founder's signed
/// records are enough, whoever relays them.
#[test]
fn a_peer_relays_a_new_folder_its_founder_signed() {
    let mut w = World::new();
    let h: mesh_core::id::FolderId = "h@ann".parse().unwrap();
    let members = FeedKey::members(&h);
    let mut ann = w.device("ann");
    let now = w.now();
    let founded = ann
        .create(
            &members,
            id("ann"),
            member_draft("ann", Role::Owner, InvitationState::Active, "ann"),
            &actor("ann", "ann-dev"),
            now,
        )
        .unwrap()
        .entry;
    let bob: UserId = "bob".parse().unwrap();
    let mut erin = w.device("erin");
    let judged = mesh_core::sync::guard::push(
        &mut erin,
        Pusher::new(&bob, &w.ring).pulled(),
        None,
        &members,
        vec![founded],
    )
    .unwrap();
    assert_eq!(judged[0].refused, None);
    assert!(erin.get(&members, &id("ann")).unwrap().is_some());
}

#[test]
fn a_keyring_learns_only_its_authoritys_revocations_and_keeps_the_earliest() {
    let mut w = World::new();
    // A statement signed by another key changes nothing, even naming a known device.
    let rogue = SecretKey::from_seed([66; 32]);
    let forged = Revocation::issue(&rogue, "ann".parse().unwrap(), dev("ann-dev"), t(5));
    assert_eq!(
        w.ring.learn(forged).unwrap_err().code(),
        ErrorCode::UntrustedCertificate
    );
    // So does one whose signed fields were changed on the way.
    let mut altered = Revocation::issue(&w.authority, "ann".parse().unwrap(), dev("x"), t(5));
    altered.device = dev("ann-dev");
    assert!(w.ring.learn(altered).is_err());
    assert_eq!(w.ring.revoked_at(&dev("ann-dev")), None);
    assert!(w.ring.revocations().is_empty());

    // A genuine one applies, even before the device's certificate arrives.
    let later = Revocation::issue(&w.authority, "zed".parse().unwrap(), dev("zed-dev"), t(9));
    assert!(w.ring.learn(later.clone()).unwrap());
    assert!(!w.ring.learn(later.clone()).unwrap(), "nothing new");
    w.ring
        .add(certify(&w.authority, "zed", "zed-dev", "zed", 0, 100))
        .unwrap();
    assert!(
        matches!(w.ring.lookup(&dev("zed-dev")), KeyStatus::Device(d) if d.revoked_at == Some(t(9)))
    );
    // An earlier statement wins and is the one relayed.
    let earlier = Revocation::issue(&w.authority, "zed".parse().unwrap(), dev("zed-dev"), t(3));
    assert!(w.ring.learn(earlier.clone()).unwrap());
    assert!(!w.ring.learn(later).unwrap());
    assert_eq!(w.ring.revoked_at(&dev("zed-dev")), Some(t(3)));
    assert_eq!(w.ring.revocations(), vec![earlier]);
}

#[test]
fn a_feeds_answer_tells_revocations_only_to_those_who_share_a_folder() {
    let mut w = World::new();
    let revoke = |user: &str, device: &str| {
        Revocation::issue(&w.authority, user.parse().unwrap(), dev(device), t(1))
    };
    let (bob, zed, ann) = (
        revoke("bob", "bob-old"),
        revoke("zed", "zed-old"),
        revoke("ann", "ann-old"),
    );
    for r in [&bob, &zed, &ann] {
        w.ring.learn(r.clone()).unwrap();
    }
    let mut told = |user: &str| -> Vec<Revocation> {
        let user: UserId = user.parse().unwrap();
        let request = Request::Feeds {
            from: "dev".parse().unwrap(),
            only: None,
            certificates: false,
        };
        match respond_as(&mut w.hub, Pusher::new(&user, &w.ring), request).unwrap() {
            Response::Feeds { revocations, .. } => revocations,
            other => panic!("{other:?}"),
        }
    };
    // Erin shares the folder with ann and bob; zed shares nothing with anyone.
    assert_eq!(told("erin"), vec![ann.clone(), bob.clone()]);
    // Carol is only invited: she sees the members feed, so she is told too.
    assert_eq!(told("carol"), vec![ann, bob]);
    // A stranger hears of their own devices only.
    assert_eq!(told("zed"), vec![zed]);
    assert!(told("yann").is_empty());
}

#[test]
fn certificates_are_sent_when_asked_and_only_of_those_who_share_a_folder() {
    let mut w = World::new();
    w.ring
        .add(certify(
            &w.authority,
            "zed",
            "zed-dev",
            "zed",
            -10,
            1_000_000,
        ))
        .unwrap();
    w.ring.revoke(&dev("frank-dev"), t(0));
    let mut told = |user: &str, certificates: bool| -> Vec<String> {
        let user: UserId = user.parse().unwrap();
        let request = Request::Feeds {
            from: "dev".parse().unwrap(),
            only: None,
            certificates,
        };
        match respond_as(&mut w.hub, Pusher::new(&user, &w.ring), request).unwrap() {
            Response::Feeds { certificates, .. } => {
                let mut devices: Vec<String> = certificates
                    .into_iter()
                    .map(|c| c.device.to_string())
                    .collect();
                devices.sort();
                devices
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(told("erin", false).is_empty(), "only when asked");
    // Every member's device but the revoked one; never the stranger's.
    assert_eq!(
        told("erin", true),
        ["ann-dev", "bob-dev", "carol-dev", "dave-dev", "erin-dev"]
    );
    assert_eq!(told("zed", true), ["zed-dev"]);
}

impl World {
    /// [`World::push`], with the signatures of `user`'s devices checked early
    /// ([`check_signatures`](mesh_core::trust::check_signatures)) from `early` (the pushed
    /// entries when `None`), as the hub does outside its lock.
    fn push_checked(
        &mut self,
        user: &str,
        feed: &FeedKey,
        entries: Vec<Entry>,
        early: Option<&[Entry]>,
    ) -> Vec<(MergeOutcome, Option<String>)> {
        let who: UserId = user.parse().unwrap();
        let checked = mesh_core::trust::check_signatures(
            &self.ring,
            &who,
            feed,
            early.unwrap_or(&entries),
            2,
        );
        let req = Request::Push {
            from: format!("{user}-replica").parse().unwrap(),
            feed: feed.clone(),
            entries,
        };
        let pusher = Pusher::new(&who, &self.ring).with_checked(&checked);
        match respond_as(&mut self.hub, pusher, req).unwrap() {
            Response::Pushed { results, .. } => {
                results.into_iter().map(|r| (r.outcome, r.code)).collect()
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Checking signatures early (the hub does it outside its lock) changes no verdict: tampered
/// versions, another user's signature, a revoked device's new version and honest writes are
/// judged alike with and without it, and a check made for one entry lets no other pass.
#[test]
fn early_signature_checks_change_no_verdict() {
    let (mut plain, mut early) = (World::new(), World::new());
    let notes = plain.notes.clone();
    type Verdicts = Vec<(MergeOutcome, Option<String>)>;
    let mut runs: Vec<Vec<Verdicts>> = Vec::new();
    for (w, checked) in [(&mut plain, false), (&mut early, true)] {
        let mut seen = Vec::new();
        let push = |w: &mut World, user: &str, entries: Vec<Entry>| {
            if checked {
                w.push_checked(user, &notes, entries, None)
            } else {
                w.push(user, &notes, entries)
            }
        };
        let mut frank = w.device("frank");
        let good = w.edit(&mut frank, "frank", &notes, "n1", "frank's edit");
        let mut tampered = good.clone();
        tampered.content.title.push('!');
        let mut moved = good.clone();
        moved.sync.id = id("n9");
        let mut erin = w.device("erin");
        let erins = w.edit(&mut erin, "erin", &notes, "e1", "erin's edit");
        // Tampered, moved and honest versions; erin's version relayed by frank.
        seen.push(push(w, "frank", vec![tampered]));
        seen.push(push(w, "frank", vec![moved]));
        seen.push(push(w, "frank", vec![good]));
        seen.push(push(w, "frank", vec![erins]));
        // A check made for an honest version lets no other signature through: here one
        // whose data still matches its seal, with the signature's bytes changed.
        let more = w.edit(&mut frank, "frank", &notes, "n1", "again");
        let mut forged = more.clone();
        forged.sync.history[0].seal.as_mut().unwrap().sig.0[7] ^= 1;
        if checked {
            seen.push(w.push_checked("frank", &notes, vec![forged], Some(&[more])));
        } else {
            seen.push(w.push("frank", &notes, vec![forged]));
        }
        // A revoked device's new version, however well signed, is refused.
        let at = w.now();
        w.ring.revoke(&dev("frank-dev"), at);
        let after = w.edit(&mut frank, "frank", &notes, "n1", "after");
        seen.push(push(w, "frank", vec![after]));
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1], "verdicts with and without early checks");
    let codes: Vec<Option<String>> = runs[1].iter().flatten().map(|r| r.1.clone()).collect();
    assert_eq!(
        codes,
        vec![
            code(ErrorCode::InvalidSignature),
            code(ErrorCode::InvalidSignature),
            None,
            None,
            code(ErrorCode::InvalidSignature),
            code(ErrorCode::Revoked),
        ]
    );
}

/// Signatures are checked in batches (each part of a push in one combined check): a push of
/// many honest versions with a few forged ones among them, checked early or not, has exactly
/// the forged ones refused and every honest one merged.
#[test]
fn a_batch_with_forged_signatures_refuses_exactly_those() {
    let (mut plain, mut early) = (World::new(), World::new());
    let notes = plain.notes.clone();
    let mut runs = Vec::new();
    for (w, checked) in [(&mut plain, false), (&mut early, true)] {
        let mut frank = w.device("frank");
        let a = actor("frank", "frank-dev");
        let mut entries = Vec::new();
        for i in 0..150 {
            let now = w.now();
            let mut e = frank
                .create(
                    &notes,
                    id(&format!("b{i}")),
                    draft(&format!("note {i}")),
                    &a,
                    now,
                )
                .unwrap()
                .entry;
            if i % 37 == 5 {
                e.sync.history[0].seal.as_mut().unwrap().sig.0[40] ^= 0x10;
            }
            entries.push(e);
        }
        let got = if checked {
            w.push_checked("frank", &notes, entries, None)
        } else {
            w.push("frank", &notes, entries)
        };
        for (i, (outcome, refused)) in got.iter().enumerate() {
            if i % 37 == 5 {
                assert_eq!(refused, &code(ErrorCode::InvalidSignature), "entry {i}");
            } else {
                assert_eq!(
                    (outcome, refused),
                    (&MergeOutcome::Added, &None),
                    "entry {i}"
                );
            }
        }
        runs.push(got);
    }
    assert_eq!(runs[0], runs[1]);
}

/// A signature the batch passed counts as passed when the entry is judged only under the key
/// it was checked with: a keyring that gives another key by the time the entry is judged
/// (say, a certificate replaced meanwhile) has the entry checked again, under that key.
#[test]
fn a_signature_passed_in_the_batch_holds_only_under_the_key_it_was_checked_with() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// frank's device under its own key for the first `honest` lookups, then under erin's.
    struct Swapping<'a> {
        ring: &'a MemoryKeyring,
        lookups: AtomicUsize,
        honest: usize,
    }
    impl Keyring for Swapping<'_> {
        fn lookup(&self, device: &DeviceId) -> KeyStatus {
            let n = self.lookups.fetch_add(1, Ordering::Relaxed);
            match (
                self.ring.lookup(device),
                self.ring.lookup(&"erin-dev".parse().unwrap()),
            ) {
                (KeyStatus::Device(mut d), KeyStatus::Device(erin)) if n >= self.honest => {
                    d.certificate.key = erin.certificate.key;
                    KeyStatus::Device(d)
                }
                (status, _) => status,
            }
        }
    }

    let mut w = World::new();
    let notes = w.notes.clone();
    let mut frank = w.device("frank");
    let a = actor("frank", "frank-dev");
    let entries: Vec<Entry> = (0..100)
        .map(|i| {
            let now = w.now();
            let draft = draft(&format!("note {i}"));
            frank
                .create(&notes, id(&format!("s{i}")), draft, &a, now)
                .unwrap()
                .entry
        })
        .collect();
    let pairs: Vec<(Option<&Entry>, &Entry)> = entries.iter().map(|e| (None, e)).collect();
    // Honest throughout: every one passes.
    let honest = Swapping {
        ring: &w.ring,
        lookups: AtomicUsize::new(0),
        honest: usize::MAX,
    };
    let all = mesh_core::trust::verify_entries(&honest, &notes, &pairs, 1);
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    // The batch gathers each entry's one item under frank's key; judging them, the keyring
    // gives erin's.
    let swapped = Swapping {
        ring: &w.ring,
        lookups: AtomicUsize::new(0),
        honest: entries.len(),
    };
    let all = mesh_core::trust::verify_entries(&swapped, &notes, &pairs, 1);
    for (i, got) in all.into_iter().enumerate() {
        let e = got.expect_err("judged under erin's key");
        assert_eq!(e.code(), ErrorCode::InvalidSignature, "entry {i}: {e}");
    }
}
