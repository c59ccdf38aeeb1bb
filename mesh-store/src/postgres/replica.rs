//! The replica store on PostgreSQL.

use std::borrow::Cow;
use std::collections::HashMap;

use deadpool_postgres::Object;
use mesh_core::id::{EntryId, FolderId, RemoteId, ReplicaId, UserId};
use mesh_core::model::{Entry, FeedKey, Scope};
use mesh_core::store::{
    ChangePage, Cursor, EncodedPage, FeedHead, FeedMoved, Incoming, Store, StoreTxn, SyncState,
};
use mesh_core::CoreError;

use crate::rows::{
    self, count_to_sql, cursor_bits_from_sql, cursor_bits_to_sql, seq_to_sql, PageBuilder,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error as PgError, Row};

type CoreResult<T> = mesh_core::Result<T>;

fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> CoreError {
    move |e| CoreError::Store(format!("postgres: {what}: {}", super::describe(&e)))
}

fn seq_from_sql(v: i64) -> CoreResult<Cursor> {
    rows::seq_from_sql("postgres", v)
}

fn decode_entry(feed: &str, id: &str, body: &str) -> CoreResult<Entry> {
    rows::decode_entry("postgres", feed, id, body)
}

/// A [`Store`] over one connection to a PostgreSQL database (see the [module
/// docs](super)). Made by [`PgDatabase::store`](super::PgDatabase::store); its methods block,
/// so call them from a blocking thread.
pub struct PgStore {
    /// The database the connection came from.
    db: super::PgDatabase,
    conn: Object,
    replica: ReplicaId,
    /// Where commits announce changed feeds (per schema).
    channel: String,
    /// Whether a session-level advisory lock may be held (released on drop).
    scoped: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("replica", &self.replica)
            .finish()
    }
}

impl PgStore {
    /// Reads `feed`'s change-log records after `since` into `page`, making each change it
    /// wants with `change` (from the feed's key and the row: position, origin, entry id,
    /// body).
    fn read_changes<T: rows::PageItem>(
        &self,
        feed: &FeedKey,
        since: Cursor,
        page: &mut PageBuilder<'_, T>,
        change: impl Fn(&str, &Row) -> CoreResult<T>,
    ) -> CoreResult<()> {
        let key = feed.to_string();
        // The server sends no row after the one whose body takes the rows' bodies past the
        // page's byte bound (`octet_length` reads a stored value's length, not the value):
        // rows arrive all at once, so this is what bounds the reader's memory. A body is never
        // longer than its entry's `wire_len_bound`, and a page counts at least its bodies'
        // lengths, so the builder is full no later.
        let rows = self
            .q(
                "SELECT pos, origin, id, body, run FROM (
                     SELECT e.pos, e.origin, e.id, e.body,
                            SUM(octet_length(e.body)) OVER (ORDER BY e.pos) AS run,
                            octet_length(e.body) AS len
                     FROM mesh_entries e
                     WHERE e.feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1)
                       AND e.pos > $2
                     ORDER BY e.pos LIMIT $3) t
                 WHERE run - len <= $4
                 ORDER BY pos",
                &[
                    &key,
                    &seq_to_sql(since),
                    &page.fetch(),
                    &count_to_sql(mesh_core::sync::MAX_PAGE_BYTES),
                ],
            )
            .map_err(db("changes_since"))?;
        let cut = rows.last().is_some_and(|row| {
            row.get::<_, i64>(4) > count_to_sql(mesh_core::sync::MAX_PAGE_BYTES)
        });
        for row in rows {
            if page.full() {
                break;
            }
            let seq = seq_from_sql(row.get(0))?;
            if page.wants(seq, || Ok(row.get::<_, Option<String>>(1)))? {
                page.push(seq, change(&key, &row)?);
            }
        }
        if cut {
            page.ends_early();
        }
        Ok(())
    }

    pub(crate) fn new(
        db: super::PgDatabase,
        conn: Object,
        replica: ReplicaId,
        channel: String,
    ) -> Self {
        PgStore {
            db,
            conn,
            replica,
            channel,
            scoped: false,
        }
    }

    /// The database this store's connection came from.
    pub(crate) fn database(&self) -> &super::PgDatabase {
        &self.db
    }

    /// The connection this store holds (for other tables' statements on it, so that a
    /// request never asks the pool for a second connection while it holds this one).
    pub(crate) fn connection(&self) -> &tokio_postgres::Client {
        &self.conn
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        super::database::block(f)
    }

    /// A query through the connection's statement cache (one round trip once prepared).
    fn q(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError> {
        self.block(async {
            let st = self.conn.prepare_cached(sql).await?;
            self.conn.query(&st, params).await
        })
    }

    fn q_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, PgError> {
        self.block(async {
            let st = self.conn.prepare_cached(sql).await?;
            self.conn.query_opt(&st, params).await
        })
    }

    fn q_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PgError> {
        self.block(async {
            let st = self.conn.prepare_cached(sql).await?;
            self.conn.query_one(&st, params).await
        })
    }

    fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
        self.block(async {
            let st = self.conn.prepare_cached(sql).await?;
            self.conn.execute(&st, params).await
        })
    }

    /// Waits for the advisory lock named `scope` and holds it until this store is dropped
    /// (every process serving the database takes the same lock for the same name). A hub
    /// takes the folder's id before it reads the folder's members and writes to it.
    pub fn lock_scope(&mut self, scope: &str) -> CoreResult<()> {
        self.scoped = true;
        self.exec(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            &[&scope],
        )
        .map_err(db("waiting for a scope lock"))?;
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if self.scoped {
            // A connection that cannot release its locks is closed with them (the pool drops
            // closed connections).
            let _ = self.block(self.conn.batch_execute("SELECT pg_advisory_unlock_all()"));
        }
    }
}

impl Store for PgStore {
    type Txn<'a> = PgTxn<'a>;

    fn replica_id(&self) -> ReplicaId {
        self.replica.clone()
    }

    fn feeds(&self) -> CoreResult<Vec<FeedHead>> {
        let rows = self
            .q(
                "SELECT key, head, entries FROM mesh_feeds WHERE entries > 0 ORDER BY key",
                &[],
            )
            .map_err(db("feeds"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let feed = rows::feed_key("postgres", row.get(0))?;
            out.push(rows::feed_head("postgres", feed, row.get(1), row.get(2))?);
        }
        out.sort_by(|a, b| a.feed.cmp(&b.feed));
        Ok(out)
    }

    fn moved_feeds(&self) -> CoreResult<Vec<FeedMoved>> {
        let rows = self
            .q(
                "SELECT key, head, seq FROM mesh_feeds WHERE entries > 0",
                &[],
            )
            .map_err(db("moved"))?;
        rows.iter()
            .map(|row| {
                let key: &str = row.get(0);
                Ok(FeedMoved {
                    feed: rows::feed_key("postgres", key)?,
                    head: seq_from_sql(row.get(1))?,
                    seq: seq_from_sql(row.get(2))?.0,
                })
            })
            .collect()
    }

    fn feed_moved(&self, feed: &FeedKey) -> CoreResult<Option<FeedMoved>> {
        let row = self
            .q_opt(
                "SELECT head, seq FROM mesh_feeds WHERE key = $1 AND entries > 0",
                &[&feed.to_string()],
            )
            .map_err(db("moved"))?;
        row.map(|r| {
            Ok(FeedMoved {
                feed: feed.clone(),
                head: seq_from_sql(r.get(0))?,
                seq: seq_from_sql(r.get(1))?.0,
            })
        })
        .transpose()
    }

    fn last_moved(&self) -> CoreResult<u64> {
        let v: i64 = self
            .q_one("SELECT last_seq FROM mesh_replica", &[])
            .map_err(db("reading the sequence counter"))?
            .get(0);
        u64::try_from(v)
            .map_err(|_| CoreError::Store(format!("postgres: invalid sequence counter {v}")))
    }

    fn feed_head(&self, feed: &FeedKey) -> CoreResult<Option<FeedHead>> {
        let row = self
            .q_opt(
                "SELECT head, entries FROM mesh_feeds WHERE key = $1 AND entries > 0",
                &[&feed.to_string()],
            )
            .map_err(db("feed head"))?;
        row.map(|r| rows::feed_head("postgres", feed.clone(), r.get(0), r.get(1)))
            .transpose()
    }

    fn scope_feeds(&self, scope: &Scope) -> CoreResult<Vec<FeedHead>> {
        let (from, to) = rows::scope_range(scope);
        let found = self
            .q(
                "SELECT key, head, entries FROM mesh_feeds
                 WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $2 AND entries > 0
                 ORDER BY key COLLATE \"C\"",
                &[&from, &to],
            )
            .map_err(db("scope feeds"))?;
        let mut out = Vec::with_capacity(found.len());
        for r in &found {
            out.extend(rows::scope_head(
                "postgres",
                scope,
                r.get(0),
                r.get(1),
                r.get(2),
            )?);
        }
        Ok(out)
    }

    fn member_folders(&self, user: &UserId) -> CoreResult<Vec<FolderId>> {
        let found = self
            .q(
                "SELECT f.key FROM mesh_members m JOIN mesh_feeds f USING (feed_id)
                 WHERE m.member = $1 AND f.entries > 0",
                &[&user.as_str()],
            )
            .map_err(db("member folders"))?;
        rows::member_folders("postgres", found.iter().map(|r| r.get(0)))
    }

    fn get(&self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Entry>> {
        get_entry(self, feed, id)
    }

    fn purge_feed(&mut self, feed: &FeedKey) -> CoreResult<u64> {
        // One statement: its deletes are one atomic change. The feed's row stays, with its
        // head, so that its positions continue should it be written again.
        let row = self
            .q_one(
                "WITH e AS (DELETE FROM mesh_entries
                            WHERE feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1)
                            RETURNING 1),
                      m AS (DELETE FROM mesh_members
                            WHERE feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1)),
                      s AS (DELETE FROM mesh_sync_state WHERE feed = $1),
                      f AS (UPDATE mesh_feeds SET entries = 0 WHERE key = $1)
                 SELECT count(*) FROM e",
                &[&feed.to_string()],
            )
            .map_err(db("purge"))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn get_many(&self, feed: &FeedKey, ids: &[EntryId]) -> CoreResult<Vec<Option<Entry>>> {
        let key = feed.to_string();
        let wanted: Vec<&str> = ids.iter().map(EntryId::as_str).collect();
        let rows = self
            .q(
                "SELECT id, body FROM mesh_entries
                 WHERE feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1)
                   AND id = ANY($2)",
                &[&key, &wanted],
            )
            .map_err(db("get_many"))?;
        let mut found: HashMap<String, Entry> = HashMap::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let entry = decode_entry(&key, &id, r.get(1))?;
            found.insert(id, entry);
        }
        Ok(ids
            .iter()
            .map(|id| found.get(id.as_str()).cloned())
            .collect())
    }

    fn changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> CoreResult<ChangePage> {
        let mut page = PageBuilder::new(since, limit, skip_origin);
        self.read_changes(feed, since, &mut page, |key, row| {
            decode_entry(key, row.get(2), row.get(3))
        })?;
        Ok(page.finish())
    }

    /// The stored bodies, checked to be JSON and passed on as they are.
    fn encoded_changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> CoreResult<EncodedPage> {
        let mut page = PageBuilder::new(since, limit, skip_origin);
        self.read_changes(feed, since, &mut page, |key, row| {
            rows::encoded_entry("postgres", key, row.get(2), row.get(3))
        })?;
        Ok(page.finish_encoded())
    }

    fn list(
        &self,
        feed: &FeedKey,
        after: Option<&EntryId>,
        limit: usize,
    ) -> CoreResult<Vec<Entry>> {
        let key = feed.to_string();
        let limit = count_to_sql(limit);
        let after = after.map_or("", EntryId::as_str);
        // `COLLATE "C"`: entry ids are ordered by their bytes, as in every store.
        let rows = self
            .q(
                "SELECT id, body FROM mesh_entries
                 WHERE feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1)
                   AND id COLLATE \"C\" > $2
                 ORDER BY id COLLATE \"C\" LIMIT $3",
                &[&key, &after, &limit],
            )
            .map_err(db("list"))?;
        rows.iter()
            .map(|r| decode_entry(&key, r.get(0), r.get(1)))
            .collect()
    }

    fn sync_state(&self, remote: &RemoteId, feed: &FeedKey) -> CoreResult<SyncState> {
        let row = self
            .q_opt(
                "SELECT remote_replica, pulled, pushed FROM mesh_sync_state
                 WHERE remote = $1 AND feed = $2",
                &[&remote.as_str(), &feed.to_string()],
            )
            .map_err(db("sync_state"))?;
        let Some(row) = row else {
            return Ok(SyncState::default());
        };
        let remote_replica: Option<&str> = row.get(0);
        let remote_replica = remote_replica
            .map(|s| {
                ReplicaId::new(s).map_err(|e| {
                    CoreError::Store(format!(
                        "postgres: sync state of {feed} with {remote}: unusable replica id: {e}"
                    ))
                })
            })
            .transpose()?;
        Ok(SyncState {
            remote_replica,
            pulled: cursor_bits_from_sql(row.get(1)),
            pushed: cursor_bits_from_sql(row.get(2)),
        })
    }

    fn begin(&mut self) -> CoreResult<PgTxn<'_>> {
        Ok(PgTxn {
            store: self,
            begun: false,
            last_seq: 0,
            heads: HashMap::new(),
            writes: HashMap::new(),
            fetched: HashMap::new(),
            order: Vec::new(),
            states: Vec::new(),
        })
    }
}

fn get_entry(store: &PgStore, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Entry>> {
    let key = feed.to_string();
    let row = store
        .q_opt(
            "SELECT body FROM mesh_entries
             WHERE feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1) AND id = $2",
            &[&key, &id.as_str()],
        )
        .map_err(db("get"))?;
    row.map(|r| decode_entry(&key, id.as_str(), r.get(0)))
        .transpose()
}

/// One buffered write of a transaction.
struct Write {
    /// The replica-wide number.
    seq: Cursor,
    /// The position in its feed.
    pos: Cursor,
    origin: Option<String>,
    entry: Entry,
    /// The entry's JSON, when it came made ahead ([`Incoming`]).
    json: Option<String>,
}

/// A transaction on a [`PgStore`]. Reads see committed rows and the transaction's own
/// writes, which are buffered and sent in one batch at [`StoreTxn::commit`]. The first write
/// opens the database transaction and locks the sequence counter until commit; dropping the
/// transaction rolls it back.
pub struct PgTxn<'a> {
    store: &'a mut PgStore,
    begun: bool,
    last_seq: u64,
    /// The head of each feed written, as the transaction leaves it.
    heads: HashMap<FeedKey, u64>,
    writes: HashMap<(FeedKey, EntryId), Write>,
    /// Entries read ahead by [`StoreTxn::prefetch`] (`None`: absent); dropped once written.
    fetched: HashMap<(FeedKey, EntryId), Option<Entry>>,
    /// Feeds in the order of their first write (for the notifications).
    order: Vec<FeedKey>,
    states: Vec<(RemoteId, FeedKey, SyncState)>,
}

impl std::fmt::Debug for PgTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTxn")
            .field("begun", &self.begun)
            .field("last_seq", &self.last_seq)
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl PgTxn<'_> {
    /// Opens the database transaction and locks the counter (on the first write).
    fn ensure_begun(&mut self) -> CoreResult<()> {
        if self.begun {
            return Ok(());
        }
        let store = &*self.store;
        store
            .block(store.conn.batch_execute("BEGIN"))
            .map_err(db("begin"))?;
        self.begun = true;
        let row = store
            .q_one("SELECT last_seq FROM mesh_replica FOR UPDATE", &[])
            .map_err(db("locking the sequence counter"))?;
        self.last_seq = seq_from_sql(row.get(0))?.0;
        Ok(())
    }

    fn flush(&mut self) -> CoreResult<()> {
        let store = &*self.store;
        if !self.writes.is_empty() {
            let keys: Vec<String> = self.order.iter().map(ToString::to_string).collect();
            store
                .exec(
                    "INSERT INTO mesh_feeds (key) SELECT unnest($1::text[])
                 ON CONFLICT (key) DO NOTHING",
                    &[&keys],
                )
                .map_err(db("creating feeds"))?;
            let rows = store
                .q(
                    "SELECT key, feed_id FROM mesh_feeds WHERE key = ANY($1)",
                    &[&keys],
                )
                .map_err(db("looking up feeds"))?;
            let ids: HashMap<String, i64> = rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect();
            let n = self.writes.len();
            let (mut feed_ids, mut eids, mut positions, mut origins, mut bodies) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            // Per feed: its new head and the replica-wide number of its latest change.
            let mut heads: HashMap<i64, (i64, i64)> = HashMap::new();
            // Entries of `members` feeds, for the index of member records.
            let (mut m_ids, mut m_feeds) = (Vec::new(), Vec::new());
            for ((feed, id), w) in &self.writes {
                let feed_id = *ids
                    .get(&feed.to_string())
                    .ok_or_else(|| CoreError::Store(format!("postgres: feed {feed} vanished")))?;
                let (pos, seq) = (seq_to_sql(w.pos), seq_to_sql(w.seq));
                let h = heads.entry(feed_id).or_insert((pos, seq));
                *h = (h.0.max(pos), h.1.max(seq));
                feed_ids.push(feed_id);
                if feed.members_folder().is_some() {
                    m_ids.push(id.as_str());
                    m_feeds.push(feed_id);
                }
                eids.push(id.as_str().to_owned());
                positions.push(pos);
                origins.push(w.origin.clone());
                bodies.push(match &w.json {
                    Some(json) => json.clone(),
                    None => w.entry.to_json()?,
                });
            }
            // `xmax = 0` marks a row the upsert inserted rather than updated.
            let rows = store.q(
                "INSERT INTO mesh_entries (feed_id, id, pos, origin, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[])
                 ON CONFLICT (feed_id, id) DO UPDATE
                    SET pos = excluded.pos, origin = excluded.origin, body = excluded.body
                 RETURNING feed_id, (xmax = 0) AS inserted",
                &[&feed_ids, &eids, &positions, &origins, &bodies],
            )
            .map_err(db("writing entries"))?;
            if !m_ids.is_empty() {
                store
                    .exec(
                        "INSERT INTO mesh_members (member, feed_id)
                         SELECT * FROM unnest($1::text[], $2::bigint[])
                         ON CONFLICT DO NOTHING",
                        &[&m_ids, &m_feeds],
                    )
                    .map_err(db("indexing members"))?;
            }
            let mut added: HashMap<i64, i64> = HashMap::new();
            for r in &rows {
                if r.get::<_, bool>(1) {
                    *added.entry(r.get(0)).or_default() += 1;
                }
            }
            let (mut f_ids, mut f_heads, mut f_seqs, mut f_added) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let f_head_of = heads.clone();
            for (feed_id, (head, seq)) in heads {
                f_ids.push(feed_id);
                f_heads.push(head);
                f_seqs.push(seq);
                f_added.push(added.get(&feed_id).copied().unwrap_or(0));
            }
            store
                .exec(
                    "UPDATE mesh_feeds f
                 SET head = v.head, seq = v.seq, entries = f.entries + v.added
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                      AS v(feed_id, head, seq, added)
                 WHERE f.feed_id = v.feed_id",
                    &[&f_ids, &f_heads, &f_seqs, &f_added],
                )
                .map_err(db("advancing feed heads"))?;
            store
                .exec(
                    "UPDATE mesh_replica SET last_seq = $1",
                    &[&seq_to_sql(Cursor(self.last_seq))],
                )
                .map_err(db("advancing the sequence counter"))?;
            // Delivered to every listening process when, and only if, this commits, in
            // commit order: "<seq> <head> <feed key>", lowest replica-wide number first.
            let mut notes: Vec<((i64, i64), &str)> = keys
                .iter()
                .filter_map(|k| Some((*f_head_of.get(ids.get(k)?)?, k.as_str())))
                .collect();
            notes.sort_unstable_by_key(|((_, seq), _)| *seq);
            let payloads: Vec<String> = notes
                .iter()
                .map(|((head, seq), k)| format!("{seq} {head} {k}"))
                .collect();
            store
                .exec(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                    &[&store.channel, &payloads],
                )
                .map_err(db("announcing changes"))?;
        }
        for (remote, feed, state) in &self.states {
            store
                .exec(
                    "INSERT INTO mesh_sync_state (remote, feed, remote_replica, pulled, pushed)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (remote, feed) DO UPDATE SET
                    remote_replica = excluded.remote_replica,
                    pulled = excluded.pulled, pushed = excluded.pushed",
                    &[
                        &remote.as_str(),
                        &feed.to_string(),
                        &state.remote_replica.as_ref().map(ReplicaId::as_str),
                        &cursor_bits_to_sql(state.pulled),
                        &cursor_bits_to_sql(state.pushed),
                    ],
                )
                .map_err(db("set_sync_state"))?;
        }
        Ok(())
    }
}

/// `MESH_PG_TEST_COMMIT_DELAY_MS`: a pause before every commit that writes (for the
/// multi-process tests, which delay one process's transactions; never set it in production).
fn commit_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms: u64 = std::env::var("MESH_PG_TEST_COMMIT_DELAY_MS")
            .ok()?
            .parse()
            .ok()?;
        Some(std::time::Duration::from_millis(ms.min(10_000)))
    })
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if self.begun {
            // A connection where even the rollback fails is broken and closed; the server
            // rolls back on its own when the connection ends.
            let _ = self.store.block(self.store.conn.batch_execute("ROLLBACK"));
        }
    }
}

impl StoreTxn for PgTxn<'_> {
    fn get(&mut self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Cow<'_, Entry>>> {
        let key = (feed.clone(), id.clone());
        if let Some(w) = self.writes.get(&key) {
            return Ok(Some(Cow::Borrowed(&w.entry)));
        }
        if let Some(found) = self.fetched.get(&key) {
            return Ok(found.as_ref().map(Cow::Borrowed));
        }
        Ok(get_entry(self.store, feed, id)?.map(Cow::Owned))
    }

    fn prefetch(&mut self, feed: &FeedKey, ids: &[EntryId]) -> CoreResult<()> {
        let wanted: Vec<&str> = ids
            .iter()
            .filter(|id| !self.writes.contains_key(&(feed.clone(), (*id).clone())))
            .map(EntryId::as_str)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let key = feed.to_string();
        let rows = self
            .store
            .q(
                "SELECT id, body FROM mesh_entries
                 WHERE feed_id = (SELECT feed_id FROM mesh_feeds WHERE key = $1)
                   AND id = ANY($2)",
                &[&key, &wanted],
            )
            .map_err(db("prefetch"))?;
        for id in ids {
            self.fetched.insert((feed.clone(), id.clone()), None);
        }
        for r in rows {
            let entry = decode_entry(&key, r.get(0), r.get(1))?;
            self.fetched
                .insert((feed.clone(), entry.sync.id.clone()), Some(entry));
        }
        Ok(())
    }

    fn put(
        &mut self,
        feed: &FeedKey,
        entry: Entry,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        self.put_incoming(feed, Incoming::from(entry), origin)
    }

    fn put_incoming(
        &mut self,
        feed: &FeedKey,
        entry: Incoming,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        let (entry, json) = entry.into_parts();
        self.ensure_begun()?;
        let next = |n| rows::next_number("postgres", n);
        let seq = next(self.last_seq)?;
        let head = match self.heads.get(feed) {
            Some(h) => *h,
            // Stable until commit: every writer holds the counter's lock first.
            None => {
                self.store
                    .q_opt(
                        "SELECT head FROM mesh_feeds WHERE key = $1",
                        &[&feed.to_string()],
                    )
                    .map_err(db("reading a feed head"))?
                    .map_or(Ok(Cursor::ZERO), |r| seq_from_sql(r.get(0)))?
                    .0
            }
        };
        let pos = next(head)?;
        if !self.order.contains(feed) {
            self.order.push(feed.clone());
        }
        self.fetched.remove(&(feed.clone(), entry.sync.id.clone()));
        self.writes.insert(
            (feed.clone(), entry.sync.id.clone()),
            Write {
                seq,
                pos,
                origin: origin.map(|o| o.as_str().to_owned()),
                entry,
                json,
            },
        );
        self.heads.insert(feed.clone(), pos.0);
        self.last_seq = seq.0;
        Ok(pos)
    }

    fn set_sync_state(
        &mut self,
        remote: &RemoteId,
        feed: &FeedKey,
        state: &SyncState,
    ) -> CoreResult<()> {
        self.states
            .push((remote.clone(), feed.clone(), state.clone()));
        Ok(())
    }

    fn commit(mut self) -> CoreResult<()> {
        if self.writes.is_empty() && self.states.is_empty() {
            return Ok(());
        }
        self.ensure_begun()?;
        self.flush()?;
        if let Some(delay) = commit_delay() {
            // Test seam: a slow commit, to let other processes' writers queue behind it.
            std::thread::sleep(delay);
        }
        let store = &*self.store;
        store
            .block(store.conn.batch_execute("COMMIT"))
            .map_err(db("commit"))?;
        self.begun = false;
        Ok(())
    }
}
