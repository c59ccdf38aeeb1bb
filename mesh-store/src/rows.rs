//! How a replica's values are kept in SQL columns, shared by the SQLite and PostgreSQL
//! stores: change-log positions, sync-state cursors, counts, and entries as checked JSON.

use mesh_core::id::{FolderId, ReplicaId};
use mesh_core::model::{Entry, FeedKey, Scope};
use mesh_core::store::{Change, ChangePage, Cursor, EncodedChange, EncodedPage, FeedHead};
use mesh_core::CoreError;
use serde_json::value::RawValue;

/// A change-log position as a column (positions past `i64::MAX` are never given out, so
/// clamping a query bound there changes nothing).
pub(crate) fn seq_to_sql(c: Cursor) -> i64 {
    i64::try_from(c.0).unwrap_or(i64::MAX)
}

/// A change-log position read back; a negative one is a damaged store.
pub(crate) fn seq_from_sql(engine: &str, v: i64) -> Result<Cursor, CoreError> {
    u64::try_from(v)
        .map(Cursor)
        .map_err(|_| CoreError::Store(format!("{engine}: invalid sequence number {v}")))
}

/// A feed key read back; one that does not parse is a damaged store.
pub(crate) fn feed_key(engine: &str, key: &str) -> Result<FeedKey, CoreError> {
    key.parse()
        .map_err(|e| CoreError::Store(format!("{engine}: unreadable feed key {key:?}: {e}")))
}

/// The range of feed keys `[from, to)` that holds every feed of `scope`: from the scope's
/// prefix (which ends in `/`) to the same text ending in the next character, `0`. Ids may
/// hold a `/`, so keys of other scopes fall in it too (`folder:a/b/todos` for folder `a`):
/// [`scope_head`] drops them.
pub(crate) fn scope_range(scope: &Scope) -> (String, String) {
    let from = scope.key_prefix();
    let mut to = from.clone();
    to.pop();
    to.push('0');
    (from, to)
}

/// A row of a scope's feeds read back: its head, or `None` for a key of another scope that
/// [`scope_range`] let in.
pub(crate) fn scope_head(
    engine: &str,
    scope: &Scope,
    key: &str,
    head: i64,
    entries: i64,
) -> Result<Option<FeedHead>, CoreError> {
    let feed = feed_key(engine, key)?;
    if &feed.scope != scope {
        return Ok(None);
    }
    feed_head(engine, feed, head, entries).map(Some)
}

/// A feed's head and entry count read back; a negative one is a damaged store.
pub(crate) fn feed_head(
    engine: &str,
    feed: FeedKey,
    head: i64,
    entries: i64,
) -> Result<FeedHead, CoreError> {
    let entries = u64::try_from(entries)
        .map_err(|_| CoreError::Store(format!("{engine}: feed {feed}: invalid count {entries}")))?;
    Ok(FeedHead {
        head: seq_from_sql(engine, head)?,
        entries,
        feed,
    })
}

/// The folders of `members` feeds read back from the index of member records, in order.
pub(crate) fn member_folders<'a>(
    engine: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<Vec<FolderId>, CoreError> {
    let mut out = Vec::new();
    for key in keys {
        let feed = feed_key(engine, key)?;
        let folder = feed.members_folder().cloned().ok_or_else(|| {
            CoreError::Store(format!("{engine}: {feed} indexed as a members feed"))
        })?;
        out.push(folder);
    }
    out.sort();
    Ok(out)
}

/// The number after `n` (a position or a replica-wide number), if it still fits a column.
pub(crate) fn next_number(engine: &str, n: u64) -> Result<Cursor, CoreError> {
    n.checked_add(1)
        .filter(|s| i64::try_from(*s).is_ok())
        .map(Cursor)
        .ok_or_else(|| CoreError::Store(format!("{engine}: sequence numbers exhausted")))
}

/// A sync-state cursor keeps all 64 bits (remotes hand out any `u64`); it is only compared
/// after being read back.
pub(crate) fn cursor_bits_to_sql(c: Cursor) -> i64 {
    i64::from_ne_bytes(c.0.to_ne_bytes())
}

/// A sync-state cursor read back.
pub(crate) fn cursor_bits_from_sql(v: i64) -> Cursor {
    Cursor(u64::from_ne_bytes(v.to_ne_bytes()))
}

/// A count or limit as a column value.
pub(crate) fn count_to_sql(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An entry's stored JSON, checked to hold the entry its row says. `feed` is written out only
/// into an error.
pub(crate) fn decode_entry(
    engine: &str,
    feed: &(impl std::fmt::Display + ?Sized),
    id: &str,
    body: &str,
) -> Result<Entry, CoreError> {
    let entry: Entry = serde_json::from_str(body).map_err(|e| {
        CoreError::Store(format!(
            "{engine}: entry {id:?} of {feed}: unreadable body: {e}"
        ))
    })?;
    if entry.sync.id.as_str() != id {
        return Err(CoreError::Store(format!(
            "{engine}: entry {id:?} of {feed}: body holds entry {:?}",
            entry.sync.id.as_str()
        )));
    }
    Ok(entry)
}

/// Builds a page of [`Store::changes_since`](mesh_core::store::Store::changes_since) (or
/// of [`encoded_changes_since`](mesh_core::store::Store::encoded_changes_since)) from
/// change-log records read in order, with the rules every store shares: at most `limit`
/// changes, at most [`scan_cap`](mesh_core::store::scan_cap) records examined, no record
/// read once the changes held pass [`MAX_PAGE_BYTES`](mesh_core::sync::MAX_PAGE_BYTES),
/// records from `skip_origin` passed over but still moving `next`. `T` is what a change
/// holds: a decoded [`Entry`], or its stored JSON.
pub(crate) struct PageBuilder<'a, T = Entry> {
    changes: Vec<(Cursor, T)>,
    next: Cursor,
    more: bool,
    limit: usize,
    scan_cap: usize,
    scanned: usize,
    /// The sizes of the changes held, added up.
    bytes: usize,
    skip_origin: Option<&'a ReplicaId>,
}

impl<'a, T> PageBuilder<'a, T> {
    pub(crate) fn new(since: Cursor, limit: usize, skip_origin: Option<&'a ReplicaId>) -> Self {
        PageBuilder {
            changes: Vec::new(),
            next: since,
            more: false,
            limit,
            scan_cap: mesh_core::store::scan_cap(limit),
            scanned: 0,
            bytes: 0,
            skip_origin,
        }
    }

    /// How many records to ask the database for: the most examined, plus one to learn
    /// whether more follow.
    pub(crate) fn fetch(&self) -> i64 {
        count_to_sql(self.scan_cap.saturating_add(1))
    }

    /// Whether the page is full; then it says more follow, and no record is read further.
    pub(crate) fn full(&mut self) -> bool {
        if self.changes.len() >= self.limit
            || self.scanned >= self.scan_cap
            || self.bytes > mesh_core::sync::MAX_PAGE_BYTES
        {
            self.more = true;
            return true;
        }
        false
    }

    /// Counts a record at `seq`; whether its entry belongs on the page (`origin` is asked for
    /// only when some origin is skipped).
    pub(crate) fn wants(
        &mut self,
        seq: Cursor,
        origin: impl FnOnce() -> Result<Option<String>, CoreError>,
    ) -> Result<bool, CoreError> {
        self.scanned += 1;
        self.next = seq;
        match self.skip_origin {
            Some(skip) => Ok(origin()?.as_deref() != Some(skip.as_str())),
            None => Ok(true),
        }
    }

    /// Adds the change of the record last counted.
    pub(crate) fn push(&mut self, seq: Cursor, change: T)
    where
        T: PageItem,
    {
        self.bytes = self.bytes.saturating_add(change.page_bytes());
        self.changes.push((seq, change));
    }

    /// Says more may follow although the records read ran out: the database stopped early.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn ends_early(&mut self) {
        self.more = true;
    }
}

/// What a page holds per change, and how much of the page's byte bound it takes.
pub(crate) trait PageItem {
    fn page_bytes(&self) -> usize;
}

impl PageItem for Entry {
    fn page_bytes(&self) -> usize {
        self.wire_len_bound()
    }
}

/// An entry's stored JSON takes its own length.
impl PageItem for Box<RawValue> {
    fn page_bytes(&self) -> usize {
        self.get().len()
    }
}

impl PageBuilder<'_, Entry> {
    pub(crate) fn finish(self) -> ChangePage {
        ChangePage {
            changes: self
                .changes
                .into_iter()
                .map(|(seq, entry)| Change { seq, entry })
                .collect(),
            next: self.next,
            more: self.more,
        }
    }
}

impl PageBuilder<'_, Box<RawValue>> {
    pub(crate) fn finish_encoded(self) -> EncodedPage {
        EncodedPage {
            changes: self
                .changes
                .into_iter()
                .map(|(seq, entry)| EncodedChange { seq, entry })
                .collect(),
            next: self.next,
            more: self.more,
        }
    }
}

/// An entry's stored JSON as a page passes it on: checked to be one JSON value (a store
/// that was damaged must not put something else into the answer around it), not decoded.
pub(crate) fn encoded_entry(
    engine: &str,
    feed: &str,
    id: &str,
    body: String,
) -> Result<Box<RawValue>, CoreError> {
    RawValue::from_string(body).map_err(|e| {
        CoreError::Store(format!(
            "{engine}: entry {id:?} of {feed}: unreadable body: {e}"
        ))
    })
}
