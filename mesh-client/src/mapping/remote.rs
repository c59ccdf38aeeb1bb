//! The folder's `files` feed as the mapping last read it, brought up to date from the feed's
//! change log: a pass reads what changed since the one before, not the whole feed again.
//!
//! A device's store only ever adds to a feed's change log (purging a feed is the hub's), and
//! every write to an entry, local or merged, takes a new position in it. So the entries read
//! once, with every change after the position read up to, are the feed as a listing would give
//! it. Should the log ever be found shorter than the position read up to, the feed is read
//! again from its start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_core::id::EntryId;
use mesh_core::model::{Entry, EntryVersion, FeedKey, FileMeta};
use mesh_core::store::{Cursor, Store};

use super::index::{entry_version, IndexRecord};

/// The feed's entries for a pass, by fold key: each with its checked metadata (`None` for a
/// tombstone).
pub(super) type RemoteFiles = BTreeMap<String, (Option<FileMeta>, Arc<RemoteEntry>)>;

/// A feed entry as a pass needs it: its id, its winning version and whether that is a
/// deletion; the whole entry only while it holds conflicts, which a pass settles from their
/// versions. (Most entries have none: the feed as read is kept for as long as the mapping
/// runs, at a fraction of what the decoded entries would take.)
#[derive(Debug, PartialEq)]
pub(super) struct RemoteEntry {
    id: EntryId,
    version: String,
    deleted: bool,
    /// Present exactly when the entry holds conflicts (boxed: most entries have none).
    full: Option<Box<Entry>>,
}

impl RemoteEntry {
    fn of(entry: Entry) -> Self {
        RemoteEntry {
            id: entry.entry_id().clone(),
            version: entry_version(&entry),
            deleted: entry.is_deleted(),
            full: (!entry.conflicts.is_empty()).then(|| Box::new(entry)),
        }
    }

    /// The entry's id.
    pub(super) fn entry_id(&self) -> &EntryId {
        &self.id
    }

    /// The key of its winning version ([`entry_version`]).
    pub(super) fn version(&self) -> &str {
        &self.version
    }

    /// Whether its winning version is a deletion.
    pub(super) fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The versions that lost to the winner (none for most entries).
    pub(super) fn conflicts(&self) -> &[EntryVersion] {
        self.full.as_ref().map_or(&[], |e| e.conflicts.as_slice())
    }

    /// The whole entry, when it holds conflicts.
    pub(super) fn with_conflicts(&self) -> Option<&Entry> {
        self.full.as_deref()
    }
}

/// The `files` feed as read so far.
#[derive(Debug, Default)]
pub(super) struct FeedRead {
    /// The change-log position everything up to which is in `entries`.
    upto: Cursor,
    /// Every entry read, refused ones too, by id.
    entries: BTreeMap<EntryId, Read>,
}

/// One entry as read, and what the mapping made of it.
#[derive(Debug)]
struct Read {
    entry: Arc<RemoteEntry>,
    made: Made,
}

#[derive(Debug)]
enum Made {
    /// A live entry whose metadata passed [`check_entry`], with its path's fold key.
    Live { key: String, meta: FileMeta },
    /// A tombstone, with the fold key of the path its own metadata names, when that path is
    /// the entry's (otherwise the key is the one this device's index has for the entry).
    Deleted(Option<String>),
    /// A live entry the mapping cannot hold: the path to report it under, and why.
    Refused { shown: String, reason: String },
}

/// What one read of the feed's change log found.
#[derive(Debug)]
pub(super) struct Changed {
    /// The entries changed, in change-log order.
    entries: Vec<Entry>,
    /// Where the read ended.
    next: Cursor,
    /// Whether the log was read again from its start (it was shorter than `since`).
    restart: bool,
}

/// Reads the entries of `feed` changed after `since`, up to the feed's head, in pages; all of
/// them from the start should the log be shorter than `since`.
pub(super) fn read_changes<S: Store + ?Sized>(
    store: &S,
    feed: &FeedKey,
    since: Cursor,
) -> mesh_core::Result<Changed> {
    let restart = store.head(feed)? < since;
    let mut at = if restart { Cursor::ZERO } else { since };
    let mut entries = Vec::new();
    loop {
        let page = store.changes_since(feed, at, 1000, None)?;
        // Each page moves on, so this ends within the log's length.
        let more = page.more && page.next > at;
        at = at.max(page.next);
        entries.extend(page.changes.into_iter().map(|c| c.entry));
        if !more {
            break;
        }
    }
    Ok(Changed {
        entries,
        next: at,
        restart,
    })
}

/// The feed for one pass.
pub(super) struct View {
    /// Live entries and tombstones by fold key.
    pub files: RemoteFiles,
    /// The version of every entry read, refused ones too (the pass's publications expect to
    /// find them unchanged).
    pub versions: HashMap<EntryId, String>,
    /// Live entries refused: the path to report, and why.
    pub refused: Vec<(String, String)>,
}

impl FeedRead {
    /// The change-log position to read on from.
    pub(super) fn upto(&self) -> Cursor {
        self.upto
    }

    /// Takes in what [`read_changes`] read from [`FeedRead::upto`].
    pub(super) fn apply(&mut self, changed: Changed) {
        if changed.restart {
            self.entries.clear();
        }
        for entry in changed.entries {
            let made = if entry.is_deleted() {
                let own = serde_json::from_str::<FileMeta>(entry.content.content.as_str())
                    .ok()
                    .filter(|m| m.path.entry_id() == *entry.entry_id())
                    .map(|m| m.path.fold_key());
                Made::Deleted(own)
            } else {
                match check_entry(&entry) {
                    Ok(meta) => Made::Live {
                        key: meta.path.fold_key(),
                        meta,
                    },
                    Err(reason) => {
                        let shown = serde_json::from_str::<serde_json::Value>(
                            entry.content.content.as_str(),
                        )
                        .ok()
                        .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(str::to_owned))
                        .unwrap_or_else(|| entry.entry_id().to_string());
                        Made::Refused { shown, reason }
                    }
                }
            };
            self.entries.insert(
                entry.entry_id().clone(),
                Read {
                    entry: Arc::new(RemoteEntry::of(entry)),
                    made,
                },
            );
        }
        self.upto = changed.next;
    }

    /// The feed as read, for a pass: in entry-id order, so that of two entries with the same
    /// fold key the later id is kept, as when the feed is listed. A tombstone whose metadata
    /// does not name its own path goes under the key `index` has for its entry, or is left
    /// out when the index has none.
    pub(super) fn view(&self, index: &BTreeMap<String, IndexRecord>) -> View {
        let mut by_id: Option<HashMap<EntryId, &String>> = None;
        let mut files = BTreeMap::new();
        let mut versions = HashMap::with_capacity(self.entries.len());
        let mut refused = Vec::new();
        for (id, read) in &self.entries {
            versions.insert(id.clone(), read.entry.version.clone());
            match &read.made {
                Made::Live { key, meta } => {
                    files.insert(key.clone(), (Some(meta.clone()), read.entry.clone()));
                }
                Made::Deleted(Some(key)) => {
                    files.insert(key.clone(), (None, read.entry.clone()));
                }
                Made::Deleted(None) => {
                    let by_id = by_id.get_or_insert_with(|| {
                        index
                            .iter()
                            .map(|(k, rec)| (rec.path.entry_id(), k))
                            .collect()
                    });
                    if let Some(key) = by_id.get(id) {
                        files.insert((*key).clone(), (None, read.entry.clone()));
                    }
                }
                Made::Refused { shown, reason } => refused.push((shown.clone(), reason.clone())),
            }
        }
        View {
            files,
            versions,
            refused,
        }
    }
}

/// Checks a live remote entry: its metadata parses (which validates the path), fits together
/// and belongs to the entry's id.
pub(super) fn check_entry(e: &Entry) -> std::result::Result<FileMeta, String> {
    let meta: FileMeta =
        serde_json::from_str(e.content.content.as_str()).map_err(|e| e.to_string())?;
    meta.check().map_err(|e| e.to_string())?;
    if meta.path.entry_id() != *e.entry_id() {
        return Err(format!(
            "entry id {} does not belong to the path {}",
            e.entry_id(),
            meta.path
        ));
    }
    if let (Some(m), Some(media)) = (&meta.manifest, &e.content.media) {
        if media.hash != m.to_string() {
            return Err("the media and the manifest differ".into());
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use mesh_core::content::JsonContent;
    use mesh_core::feedsync::{self, Stamp};
    use mesh_core::id::{DeviceId, FolderId};
    use mesh_core::model::{EntryData, FeedKey, FileKind, FilePath};
    use mesh_core::store::{MemoryStore, StoreTxn};
    use mesh_core::time::Timestamp;
    use proptest::prelude::*;

    use super::*;

    fn files() -> FeedKey {
        FeedKey::folder("f1".parse::<FolderId>().unwrap(), "files".parse().unwrap())
    }

    fn path(i: u8) -> FilePath {
        format!("dir{i}").parse().unwrap()
    }

    /// Metadata naming `p` (a directory: no content to go with it).
    fn meta(p: &FilePath) -> serde_json::Value {
        serde_json::to_value(FileMeta {
            path: p.clone(),
            kind: FileKind::Dir,
            size: 0,
            mtime_ns: 0,
            mode: 0o755,
            manifest: None,
            renamed_from: None,
        })
        .unwrap()
    }

    /// How a write leaves file `i`'s entry.
    #[derive(Debug, Clone, Copy)]
    enum How {
        Live,
        Deleted,
        /// Live, with metadata naming another path (the mapping refuses it).
        Refused,
        /// Deleted, its last metadata naming another path.
        DeletedElsewhere,
    }

    /// Writes file `i`'s entry (creating it if need be) the way `how` says, at `secs`.
    fn write(store: &mut MemoryStore, i: u8, how: How, secs: i64) {
        let p = path(i);
        let id = p.entry_id();
        let named = match how {
            How::Live | How::Deleted => meta(&p),
            How::Refused | How::DeletedElsewhere => meta(&format!("other{i}").parse().unwrap()),
        };
        let when = Timestamp::from_unix(1_700_000_000 + secs).unwrap();
        let stamp = Stamp::new("dev-a".parse::<DeviceId>().unwrap(), when);
        let data = EntryData {
            title: p.to_string(),
            content: JsonContent::from(&named),
            media: None,
            author: "ann".parse().unwrap(),
            published: when,
            updated: when,
        };
        let before = store.get(&files(), &id).unwrap();
        let live = match &before {
            Some(e) => feedsync::update(e, &stamp, data, false).unwrap(),
            None => feedsync::create(id, &stamp, data),
        };
        let entry = match how {
            How::Live | How::Refused => live,
            How::Deleted | How::DeletedElsewhere => feedsync::delete(&live, &stamp).unwrap(),
        };
        let mut tx = store.begin().unwrap();
        tx.put(&files(), entry, None).unwrap();
        tx.commit().unwrap();
    }

    /// The feed read the way passes read it before: listed whole.
    fn listed(store: &MemoryStore) -> FeedRead {
        let mut all = Vec::new();
        let mut after: Option<EntryId> = None;
        loop {
            let page = store.list(&files(), after.as_ref(), 3).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.entry_id().clone());
            all.extend(page);
        }
        let mut read = FeedRead::default();
        read.apply(Changed {
            entries: all,
            next: store.head(&files()).unwrap(),
            restart: false,
        });
        read
    }

    fn same_view(a: &View, b: &View) -> bool {
        a.files == b.files && a.versions == b.versions && a.refused == b.refused
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u8, How),
        Pass,
    }

    fn op() -> impl Strategy<Value = Op> {
        let how = prop_oneof![
            Just(How::Live),
            Just(How::Deleted),
            Just(How::Refused),
            Just(How::DeletedElsewhere),
        ];
        prop_oneof![
            4 => (0u8..12, how).prop_map(|(i, h)| Op::Write(i, h)),
            1 => Just(Op::Pass),
        ]
    }

    proptest! {
        /// Read on from pass to pass, the feed is what a listing of it gives, and each pass
        /// reads only the entries written since the one before.
        #[test]
        fn reading_on_gives_the_feed_listed(ops in proptest::collection::vec(op(), 1..60)) {
            let mut store = MemoryStore::new("dev-a-replica".parse().unwrap());
            let mut read = FeedRead::default();
            let mut written: HashSet<EntryId> = HashSet::new();
            let index = BTreeMap::new();
            for (n, op) in ops.into_iter().chain([Op::Pass]).enumerate() {
                match op {
                    Op::Write(i, how) => {
                        write(&mut store, i, how, n as i64);
                        written.insert(path(i).entry_id());
                    }
                    Op::Pass => {
                        let changed = read_changes(&store, &files(), read.upto()).unwrap();
                        prop_assert!(!changed.restart);
                        let ids: HashSet<EntryId> =
                            changed.entries.iter().map(|e| e.entry_id().clone()).collect();
                        prop_assert_eq!(&ids, &written, "a pass reads what changed, only that");
                        prop_assert_eq!(ids.len(), changed.entries.len());
                        written.clear();
                        read.apply(changed);
                        prop_assert_eq!(read.upto(), store.head(&files()).unwrap());
                        let whole = listed(&store);
                        prop_assert!(same_view(&read.view(&index), &whole.view(&index)));
                    }
                }
            }
        }
    }

    /// A log found shorter than what was read is read again from its start: what was read
    /// before is not kept (it is no longer the feed).
    #[test]
    fn a_shorter_log_is_read_again_whole() {
        let mut first = MemoryStore::new("dev-a-replica".parse().unwrap());
        for i in 0..5 {
            write(&mut first, i, How::Live, 0);
        }
        let mut read = FeedRead::default();
        read.apply(read_changes(&first, &files(), Cursor::ZERO).unwrap());
        assert_eq!(read.upto(), Cursor(5));
        let mut other = MemoryStore::new("dev-a-replica".parse().unwrap());
        for i in 7..9 {
            write(&mut other, i, How::Live, 0);
        }
        let changed = read_changes(&other, &files(), read.upto()).unwrap();
        assert!(changed.restart);
        read.apply(changed);
        let index = BTreeMap::new();
        let view = read.view(&index);
        assert!(same_view(&view, &listed(&other).view(&index)));
        assert_eq!(view.files.len(), 2);
    }

    /// Only an entry with conflicts is kept whole: for the others the view keeps what a pass
    /// reads of them (id, winning version, deletion), not their content and history.
    #[test]
    fn only_entries_in_conflict_are_kept_whole() {
        let mut store = MemoryStore::new("dev-a-replica".parse().unwrap());
        write(&mut store, 0, How::Live, 0);
        // Two devices create file 1 at the same moment: one version wins, one is a conflict.
        let p = path(1);
        let version = |device: &str, title: &str| {
            let when = Timestamp::from_unix(1_700_000_000).unwrap();
            let data = EntryData {
                title: title.into(),
                content: JsonContent::from(&meta(&p)),
                media: None,
                author: "ann".parse().unwrap(),
                published: when,
                updated: when,
            };
            feedsync::create(
                p.entry_id(),
                &Stamp::new(device.parse::<DeviceId>().unwrap(), when),
                data,
            )
        };
        let merged = feedsync::merge(Some(&version("dev-a", "one")), version("dev-b", "two"))
            .unwrap()
            .item
            .expect("the merge keeps both");
        assert_eq!(merged.conflicts.len(), 1);
        let mut tx = store.begin().unwrap();
        tx.put(&files(), merged.clone(), None).unwrap();
        tx.commit().unwrap();

        let mut read = FeedRead::default();
        read.apply(read_changes(&store, &files(), Cursor::ZERO).unwrap());
        let view = read.view(&BTreeMap::new());
        let plain = &view.files[&path(0).fold_key()].1;
        assert!(plain.with_conflicts().is_none() && plain.conflicts().is_empty());
        assert!(!plain.is_deleted());
        let torn = &view.files[&p.fold_key()].1;
        assert_eq!(torn.with_conflicts(), Some(&merged));
        assert_eq!(torn.conflicts().len(), 1);
        assert_eq!(torn.version(), entry_version(&merged));
        assert_eq!(view.versions[&p.entry_id()], entry_version(&merged));
    }

    /// Each part of the view, for the kinds of entries a feed holds.
    #[test]
    fn the_view_sorts_entries_by_what_they_are() {
        let mut store = MemoryStore::new("dev-a-replica".parse().unwrap());
        write(&mut store, 0, How::Live, 0);
        write(&mut store, 1, How::Deleted, 0);
        write(&mut store, 2, How::Refused, 0);
        write(&mut store, 3, How::DeletedElsewhere, 0);
        let mut read = FeedRead::default();
        read.apply(read_changes(&store, &files(), Cursor::ZERO).unwrap());
        let view = read.view(&BTreeMap::new());
        let keys: Vec<&String> = view.files.keys().collect();
        assert_eq!(keys, [&path(0).fold_key(), &path(1).fold_key()]);
        assert!(view.files[&path(0).fold_key()].0.is_some());
        assert!(view.files[&path(1).fold_key()].0.is_none());
        assert_eq!(view.refused.len(), 1);
        assert_eq!(view.refused[0].0, "other2");
        assert_eq!(
            view.versions.len(),
            4,
            "every entry's version, refused ones too"
        );
    }
}
