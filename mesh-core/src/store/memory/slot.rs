//! The compact form in which the memory store keeps an entry.
//!
//! An [`Entry`] as a value is about 200 bytes inline plus a heap block for its history, and
//! most of it is the same from entry to entry or usually empty: the media reference, the
//! conflicts, the seal, the history beyond its topmost item. A [`Slot`] keeps, inline, what
//! every entry has (id, content, title, timestamps, flags and, when the history is one
//! unsealed item, that item's sequence and time) and names the author, the topmost item's
//! device and the origin together by a `u32` ([`Whos`](super::who::Whos)); the rest, when any
//! of it is present, goes in one boxed [`Rest`] (a longer or sealed history is moved there
//! whole, as it came). A slot is 104 bytes. The store packs an entry when it is put and
//! rebuilds it, unchanged, when it is read.

use crate::content::JsonContent;
use crate::feedsync::{HistoryItem, Item, SyncMeta};
use crate::id::{EntryId, ReplicaId};
use crate::model::{Entry, EntryData, EntryVersion, MediaRef};
use crate::time::Timestamp;

use super::who::Who;

/// Flag: the winning version is a tombstone (`SyncMeta::deleted`).
const DELETED: u8 = 1;
/// Flag: `SyncMeta::noconflicts`.
const NOCONFLICTS: u8 = 2;
/// Flag: the history is one item without a seal, described by `top_seq`, `when` and the
/// `Who`'s `by` (otherwise it is [`Rest::history`]).
const TOP: u8 = 4;
/// Flag: that item has a `when`.
const WHEN: u8 = 8;

/// The parts of an entry that are usually absent.
struct Rest {
    /// The whole history, unless it is inline ([`TOP`]).
    history: Vec<HistoryItem>,
    media: Option<Box<MediaRef>>,
    conflicts: Vec<EntryVersion>,
}

/// One stored entry (see the module's documentation).
pub(super) struct Slot {
    /// The entry's id: the key the index finds the slot by.
    pub(super) id: EntryId,
    content: JsonContent,
    title: Box<str>,
    rest: Option<Box<Rest>>,
    /// The position of the entry's latest change in its feed.
    pub(super) seq: u64,
    published: Timestamp,
    updated: Timestamp,
    /// The inline history item's `when` (with [`WHEN`]).
    when: Timestamp,
    updates: u32,
    /// The inline history item's `sequence` (with [`TOP`]).
    top_seq: u32,
    /// The number of the interned [`Who`].
    pub(super) who: u32,
    flags: u8,
}

impl Slot {
    /// Packs `entry`, changed at `seq` and written verbatim from `origin`, into a slot whose
    /// `who` is still to be set to the number of the returned [`Who`].
    pub(super) fn pack(entry: Entry, seq: u64, origin: Option<&ReplicaId>) -> (Slot, Who) {
        let Item {
            sync:
                SyncMeta {
                    id,
                    updates,
                    deleted,
                    noconflicts,
                    mut history,
                },
            content:
                EntryData {
                    title,
                    content,
                    media,
                    author,
                    published,
                    updated,
                },
            conflicts,
        } = entry;
        let mut flags = 0;
        if deleted {
            flags |= DELETED;
        }
        if noconflicts {
            flags |= NOCONFLICTS;
        }
        let (mut top_seq, mut when) = (0, Timestamp::EPOCH);
        let by = history.first().and_then(|h| h.by.clone());
        if let [top] = history.as_slice() {
            if top.seal.is_none() {
                flags |= TOP;
                top_seq = top.sequence;
                if let Some(w) = top.when {
                    flags |= WHEN;
                    when = w;
                }
                history = Vec::new();
            }
        }
        let rest = if history.is_empty() && media.is_none() && conflicts.is_empty() {
            None
        } else {
            Some(Box::new(Rest {
                history,
                media: media.map(Box::new),
                conflicts,
            }))
        };
        let slot = Slot {
            id,
            content,
            title: title.into_boxed_str(),
            rest,
            seq,
            published,
            updated,
            when,
            updates,
            top_seq,
            who: u32::MAX,
            flags,
        };
        let who = Who {
            author,
            by,
            origin: origin.cloned(),
        };
        (slot, who)
    }

    fn top(&self, who: &Who) -> Option<HistoryItem> {
        (self.flags & TOP != 0).then(|| HistoryItem {
            sequence: self.top_seq,
            when: (self.flags & WHEN != 0).then_some(self.when),
            by: who.by.clone(),
            seal: None,
        })
    }

    /// The history when it is not inline.
    fn tail(&self) -> &[HistoryItem] {
        self.rest.as_ref().map_or(&[], |r| &r.history)
    }

    fn media(&self) -> Option<MediaRef> {
        self.rest.as_ref().and_then(|r| r.media.as_deref().cloned())
    }

    fn conflicts(&self) -> &[EntryVersion] {
        self.rest.as_ref().map_or(&[], |r| &r.conflicts)
    }

    /// The stored entry, given the slot's [`Who`].
    pub(super) fn unpack(&self, who: &Who) -> Entry {
        let tail = self.tail();
        let mut history = Vec::with_capacity(1 + tail.len());
        history.extend(self.top(who));
        history.extend_from_slice(tail);
        Item {
            sync: SyncMeta {
                id: self.id.clone(),
                updates: self.updates,
                deleted: self.flags & DELETED != 0,
                noconflicts: self.flags & NOCONFLICTS != 0,
                history,
            },
            content: EntryData {
                title: self.title.to_string(),
                content: self.content.clone(),
                media: self.media(),
                author: who.author.clone(),
                published: self.published,
                updated: self.updated,
            },
            conflicts: self.conflicts().to_vec(),
        }
    }

    /// Overwrites `out` with the stored entry (as [`Self::unpack`]), reusing its history,
    /// title and conflicts buffers: a transaction reads many entries into one.
    pub(super) fn unpack_into(&self, who: &Who, out: &mut Entry) {
        let sync = &mut out.sync;
        sync.id.clone_from(&self.id);
        sync.updates = self.updates;
        sync.deleted = self.flags & DELETED != 0;
        sync.noconflicts = self.flags & NOCONFLICTS != 0;
        sync.history.clear();
        sync.history.extend(self.top(who));
        sync.history.extend_from_slice(self.tail());
        let data = &mut out.content;
        data.title.clear();
        data.title.push_str(&self.title);
        data.content.clone_from(&self.content);
        data.media = self.media();
        data.author.clone_from(&who.author);
        data.published = self.published;
        data.updated = self.updated;
        out.conflicts.clear();
        out.conflicts.extend_from_slice(self.conflicts());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedsync::Version;
    use crate::trust::{Digest, Seal, Signature};
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-c]{1,3}"
    }

    fn history_item() -> impl Strategy<Value = HistoryItem> {
        (
            1u32..5,
            proptest::option::of(-5i64..5),
            proptest::option::of(name()),
            proptest::option::of((any::<bool>(), any::<u8>())),
        )
            .prop_map(|(sequence, when, by, seal)| HistoryItem {
                sequence,
                when: when.map(|w| Timestamp::from_unix(w).unwrap()),
                by: by.map(|b| b.parse().unwrap()),
                seal: seal.map(|(deleted, b)| {
                    Box::new(Seal {
                        deleted,
                        author: "ann".parse().unwrap(),
                        digest: Digest([b; 32]),
                        sig: Signature([b; 64]),
                    })
                }),
            })
    }

    fn data() -> impl Strategy<Value = EntryData> {
        (
            "[a-z ]{0,12}",
            0u32..100,
            proptest::option::of((name(), 0u64..9)),
            name(),
            -9i64..9,
            -9i64..9,
        )
            .prop_map(|(title, n, media, author, p, u)| EntryData {
                title,
                content: JsonContent::from(&serde_json::json!({ "n": n })),
                media: media.map(|(hash, length)| MediaRef {
                    hash,
                    content_type: "image/png".into(),
                    length,
                }),
                author: author.parse().unwrap(),
                published: Timestamp::from_unix(p).unwrap(),
                updated: Timestamp::from_unix(u).unwrap(),
            })
    }

    fn meta(id: EntryId) -> impl Strategy<Value = SyncMeta> {
        (
            0u32..9,
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(history_item(), 0..4),
        )
            .prop_map(move |(updates, deleted, noconflicts, history)| SyncMeta {
                id: id.clone(),
                updates,
                deleted,
                noconflicts,
                history,
            })
    }

    /// Any entry, valid or not: the store keeps whatever it is given.
    fn entry() -> impl Strategy<Value = Entry> {
        let id: EntryId = "entry-1".parse().unwrap();
        (
            meta(id.clone()),
            data(),
            proptest::collection::vec((meta(id), data()), 0..3),
        )
            .prop_map(|(sync, content, conflicts)| Item {
                sync,
                content,
                conflicts: conflicts
                    .into_iter()
                    .map(|(sync, content)| Version { sync, content })
                    .collect(),
            })
    }

    proptest! {
        /// Packing loses nothing: unpacking (into a fresh entry, or over another entry)
        /// gives back the entry that was packed, and the `Who` holds its writer fields.
        #[test]
        fn pack_then_unpack_is_identity(
            e in entry(),
            other in entry(),
            origin in proptest::option::of(name()),
        ) {
            let origin: Option<ReplicaId> = origin.map(|o| o.parse().unwrap());
            let (slot, who) = Slot::pack(e.clone(), 7, origin.as_ref());
            prop_assert_eq!(slot.seq, 7);
            prop_assert_eq!(&who.author, &e.content.author);
            prop_assert_eq!(who.by.as_ref(), e.sync.topmost().and_then(|h| h.by.as_ref()));
            prop_assert_eq!(&who.origin, &origin);
            prop_assert_eq!(&slot.unpack(&who), &e);
            let mut out = other;
            slot.unpack_into(&who, &mut out);
            prop_assert_eq!(&out, &e);
        }
    }

    #[test]
    fn a_slot_is_104_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 104);
    }
}
