//! A model-based property: honest writes under each user's role interleaved with adversarial
//! pushes leave the hub in a state those users' honest writes could have produced, and never
//! drop an honest acknowledged version.

use mesh_core::feedsync::{HistoryItem, Version};
use mesh_core::model::{Entry, EntryData, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::Replica;
use mesh_core::store::MemoryStore;
use mesh_core::trust::{seal_version, verify_entry, KeyStatus, Keyring, SecretKey};
use proptest::prelude::*;

use crate::common::*;
use crate::trust::{member_draft, World};

/// The users who write, with their roles in the world's folder.
const WRITERS: &[&str] = &["ann", "frank", "erin", "bob", "carol"];

#[derive(Debug, Clone)]
enum Op {
    /// An honest write by `user` (only what the role allows), after catching up or not.
    Honest {
        user: usize,
        entry: u8,
        kind: u8,
        refresh: bool,
    },
    /// An adversarial push by `user`.
    Attack { user: usize, entry: u8, kind: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..WRITERS.len(), 0u8..4, 0u8..3, any::<bool>()).prop_map(
            |(user, entry, kind, refresh)| {
                Op::Honest {
                    user,
                    entry,
                    kind,
                    refresh,
                }
            }
        ),
        (0..WRITERS.len(), 0u8..4, 0u8..9).prop_map(|(user, entry, kind)| Op::Attack {
            user,
            entry,
            kind
        }),
    ]
}

fn key_of(user: &str) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..user.len()].copy_from_slice(user.as_bytes());
    SecretKey::from_seed(seed)
}

fn role(user: &str) -> Option<Role> {
    match user {
        "ann" => Some(Role::Owner),
        "frank" => Some(Role::Full),
        "erin" => Some(Role::Author),
        "bob" => Some(Role::Reader),
        _ => None,
    }
}

struct Model {
    w: World,
    devices: Vec<Replica<MemoryStore>>,
    /// Every honest version the hub acknowledged: (entry, its topmost history item).
    acked: Vec<(String, HistoryItem)>,
}

fn versions(e: &Entry) -> Vec<(&mesh_core::feedsync::SyncMeta, &EntryData)> {
    std::iter::once((&e.sync, &e.content))
        .chain(e.conflicts.iter().map(|c| (&c.sync, &c.content)))
        .collect()
}

impl Model {
    fn new() -> Self {
        let w = World::new();
        let devices = WRITERS.iter().map(|u| w.device(u)).collect();
        Model {
            w,
            devices,
            acked: Vec::new(),
        }
    }

    fn honest(&mut self, user: usize, entry: u8, kind: u8, refresh: bool) {
        let name = WRITERS[user];
        let notes = self.w.notes.clone();
        if refresh {
            self.w.refresh(&mut self.devices[user]);
        }
        let id = id(&format!("x{entry}"));
        let me = actor(name, &format!("{name}-dev"));
        let now = self.w.now();
        let d = &mut self.devices[user];
        let cur = d.get(&notes, &id).unwrap();
        let may_change = |author: &str| match role(name) {
            Some(Role::Owner | Role::Full) => true,
            Some(Role::Author) => author == name,
            _ => false,
        };
        let written = match (cur, kind) {
            (None, _) if matches!(role(name), Some(Role::Owner | Role::Full | Role::Author)) => d
                .create(
                    &notes,
                    id.clone(),
                    draft(&format!("{name} {now}")),
                    &me,
                    now,
                ),
            (Some(c), 0 | 1) if may_change(c.content.author.as_str()) => {
                d.update(&notes, &id, draft(&format!("{name} {now}")), &me, now)
            }
            (Some(c), 2) if may_change(c.content.author.as_str()) && !c.is_deleted() => {
                d.delete(&notes, &id, &me, now)
            }
            _ => return,
        };
        let Ok(written) = written else { return };
        let got = self.w.push(name, &notes, vec![written.entry.clone()]);
        // An honest write may still be refused: the hub holds a version the writer's stale
        // view does not know, by another author it may not change. It must never be refused
        // for its signature or shape.
        match &got[0].1 {
            None => {
                let top = written.entry.sync.history[0].clone();
                self.acked.push((id.to_string(), top));
            }
            Some(code) => assert_eq!(code, "permission_denied", "{name}: {written:?}"),
        }
    }

    fn attack(&mut self, user: usize, entry: u8, kind: u8) {
        let name = WRITERS[user];
        let (notes, members) = (self.w.notes.clone(), self.w.members.clone());
        self.w.refresh(&mut self.devices[user]);
        let me = actor(name, &format!("{name}-dev"));
        let key = key_of(name);
        let now = self.w.now();
        let target = id(&format!("x{entry}"));
        let d = &mut self.devices[user];
        let base = d.get(&notes, &target).unwrap();
        // A version signed by the attacker's own key: a create or an update of the target.
        let own = |d: &mut Replica<MemoryStore>| -> Entry {
            match d.get(&notes, &target).unwrap() {
                Some(_) => d.update(&notes, &target, draft("evil"), &me, now),
                None => d.create(&notes, target.clone(), draft("evil"), &me, now),
            }
            .unwrap()
            .entry
        };
        let (feed, pushed) = match kind {
            // A forged version hidden among the conflicts of an honest-looking item.
            0 => {
                let evil = own(&mut d.clone_for_attack());
                let mut carrier = base.clone().unwrap_or_else(|| evil.clone());
                carrier.conflicts.push(Version {
                    sync: evil.sync,
                    content: evil.content,
                });
                (notes, carrier)
            }
            // A history item claiming ann's device made a huge update.
            1 => {
                let mut e = own(d);
                e.sync
                    .history
                    .push(HistoryItem::new(1_000_000, Some(now), Some(dev("ann-dev"))));
                (notes, e)
            }
            // Another author's name on the attacker's version, re-signed.
            2 => {
                let mut e = own(d);
                e.content.author = "ann".parse().unwrap();
                e.sync.history[0].seal = None;
                let del = e.sync.deleted;
                seal_version(&notes, &target, &mut e.sync.history, del, &e.content, &key);
                (notes, e)
            }
            // `noconflicts` on the attacker's version.
            3 => {
                let mut e = own(d);
                e.sync.noconflicts = true;
                (notes, e)
            }
            // The end of the counter.
            4 => {
                let mut e = own(d);
                e.sync.updates = u32::MAX;
                e.sync.history[0].sequence = u32::MAX;
                let del = e.sync.deleted;
                seal_version(&notes, &target, &mut e.sync.history, del, &e.content, &key);
                (notes, e)
            }
            // Replay: another entry's genuine signed version under this id.
            5 => {
                let Some(other) = self.w.all(&notes).into_iter().find(|e| e.sync.id != target)
                else {
                    return;
                };
                let mut e = other;
                e.sync.id = target.clone();
                (notes, e)
            }
            // A tombstone of one's own membership carrying an owner version as a conflict.
            6 => {
                let Some(mine) = d.get(&members, &id(name)).unwrap() else {
                    return;
                };
                let mut twin = d.clone_for_attack();
                let owner = twin
                    .update(
                        &members,
                        &id(name),
                        member_draft(name, Role::Owner, InvitationState::Active, "ann"),
                        &me,
                        now,
                    )
                    .unwrap()
                    .entry;
                let mut carrier = match d.delete(&members, &id(name), &me, now) {
                    Ok(w) => w.entry,
                    Err(_) => mine,
                };
                carrier.conflicts.push(Version {
                    sync: owner.sync,
                    content: owner.content,
                });
                (members, carrier)
            }
            // Accepting carol's invitation for her (carol's own accept would be honest).
            7 if name == "carol" => return,
            7 => {
                let Ok(w) = d.update(
                    &members,
                    &id("carol"),
                    member_draft("carol", Role::Reader, InvitationState::Active, "ann"),
                    &me,
                    now,
                ) else {
                    return;
                };
                (members, w.entry)
            }
            // A raised count without a new signature.
            _ => {
                let Some(mut e) = base else { return };
                e.sync.updates += 3;
                (notes, e)
            }
        };
        let _ = self.w.push(name, &feed, vec![pushed]);
    }

    /// The invariants of the property.
    fn check(&self) {
        let notes = &self.w.notes;
        let hub_notes = self.w.all(notes);
        for e in &hub_notes {
            // Everything stored verifies from scratch.
            verify_entry(&self.w.ring, notes, None, e).unwrap();
            for (sync, data) in versions(e) {
                let by = sync.topmost().unwrap().by.clone().unwrap();
                let signer = match self.w.ring.lookup(&by) {
                    KeyStatus::Device(d) => d.certificate.user.to_string(),
                    other => panic!("a stored version by {by}: {other:?}"),
                };
                // The signer's role allowed this version.
                match role(&signer) {
                    Some(Role::Owner | Role::Full) => {}
                    Some(Role::Author) => assert_eq!(data.author.as_str(), signer, "{e:?}"),
                    _ => panic!("{signer} has no right to store {e:?}"),
                }
                assert!(sync.updates <= mesh_core::feedsync::limits::MAX_UPDATES);
            }
        }
        // No honest acknowledged version was dropped.
        for (name, top) in &self.acked {
            let e = hub_notes
                .iter()
                .find(|e| e.sync.id.as_str() == name)
                .unwrap_or_else(|| panic!("{name} vanished"));
            let kept = versions(e)
                .iter()
                .any(|(s, _)| s.history.iter().any(|h| h.covers(top)));
            assert!(kept, "{name}: acknowledged {top:?} lost in {e:?}");
        }
        // Nobody's membership changed.
        let expect = [
            ("ann", Role::Owner, InvitationState::Active),
            ("bob", Role::Reader, InvitationState::Active),
            ("carol", Role::Reader, InvitationState::Invited),
            ("erin", Role::Author, InvitationState::Active),
            ("frank", Role::Full, InvitationState::Active),
        ];
        for (user, r, state) in expect {
            let m: Member = self.w.member(user).unwrap();
            assert_eq!((m.role, m.state), (r, state), "{user}");
        }
    }
}

/// A second replica of the same device (same key), holding what the first holds: a device
/// that writes two versions the other does not know.
trait CloneForAttack {
    fn clone_for_attack(&self) -> Self;
}

impl CloneForAttack for Replica<MemoryStore> {
    fn clone_for_attack(&self) -> Self {
        let mut r = replica("twin");
        for u in WRITERS {
            if Some(key_of(u).public()) == self.signer() {
                r.set_signer(key_of(u));
            }
        }
        for feed in ["folder:f@ann/members", "folder:f@ann/notes"] {
            let feed: FeedKey = feed.parse().unwrap();
            let all: Vec<Entry> = self
                .changes_since(&feed, mesh_core::store::Cursor::ZERO, 10_000)
                .unwrap()
                .changes
                .into_iter()
                .map(|c| c.entry)
                .collect();
            r.merge_batch(&feed, all, None).unwrap();
        }
        r
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MESH_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn adversarial_pushes_never_beat_the_roles_nor_drop_an_honest_version(
        ops in prop::collection::vec(op(), 1..24)
    ) {
        let mut m = Model::new();
        for op in ops {
            match op {
                Op::Honest { user, entry, kind, refresh } => m.honest(user, entry, kind, refresh),
                Op::Attack { user, entry, kind } => m.attack(user, entry, kind),
            }
            m.check();
        }
    }
}
