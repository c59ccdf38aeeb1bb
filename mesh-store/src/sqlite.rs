//! The SQLite store: the embedded default, one file per replica.
//!
//! # Schema
//!
//! The file is marked as a mesh store by SQLite's header fields: `PRAGMA application_id` is
//! [`SqliteStore::APPLICATION_ID`] and `PRAGMA user_version` is the schema version. Version 2:
//!
//! | table | holds |
//! |---|---|
//! | `meta(key, value)` | `replica_id` (this replica's id), `last_seq` (the last replica-wide number committed) |
//! | `feeds(feed_id, key, head, entries, seq)` | every feed that was written: its text key, head (position of its latest change), entry count and the replica-wide number of its latest change; a purged feed keeps its row, with no entries, so that its positions continue |
//! | `entries(seq, feed_id, id, origin, body, pos)` | one row per entry: `seq` (the row id) is the replica-wide number of its latest change and `pos` that change's position in the feed's log, `origin` the replica its latest write came from verbatim, `body` its JSON |
//! | `sync_state(remote, feed, remote_replica, pulled, pushed)` | the sync state of a feed with a remote |
//!
//! with the indexes `entries_by_id(feed_id, id)` (unique; for `get` and `list`) and
//! `entries_pos(feed_id, pos)` (unique; for `changes_since`, which therefore costs
//! O(changes)).
//!
//! Version 1 numbered changes replica-wide only (`seq` was the position too). Migrating keeps
//! every position as it was, since a feed's replica-wide numbers already increase within it; new
//! changes continue after the feed's head. Cursors held by remotes stay valid.
//!
//! Schema changes are [`MIGRATIONS`]: a list of SQL steps, step `n` taking the file from version
//! `n` to `n + 1`, each applied in its own transaction together with the version bump. A file
//! from a newer build fails to open with [`StoreError::TooNew`]; another application's
//! SQLite file, or something that is no database, with [`StoreError::Corrupt`]. Neither is
//! modified.
//!
//! # Durability
//!
//! The store runs in WAL mode with `synchronous = FULL` (and `fullfsync` where the platform has
//! it): every commit syncs the write-ahead log before [`StoreTxn::commit`] returns, so a write
//! that was acknowledged survives a killed process *and* a power loss or OS crash. (`NORMAL`
//! would be enough for a killed process only; losing the last acknowledged writes on power loss
//! would break the promise made to the caller.) A crash at any other point leaves the last
//! committed state, which SQLite recovers from the log on the next open. Readers never block the
//! writer; a second process writing the same file waits up to [`BUSY_TIMEOUT`].
//!
//! # Positions and replica-wide numbers
//!
//! `meta.last_seq` is read when a transaction begins, advanced by each put and written back in
//! the same transaction on commit; a feed's head is read when the transaction first writes the
//! feed and written back on commit. A rolled-back transaction leaves both as they were, so
//! committed numbers run `1, 2, 3…` without gaps and none is ever given out twice (the rules
//! of [`mesh_core::store::suite`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use mesh_core::id::{EntryId, FolderId, RemoteId, ReplicaId, UserId};
use mesh_core::model::{Entry, FeedKey, Scope};
use mesh_core::store::{
    ChangePage, Cursor, EncodedPage, FeedHead, FeedMoved, Incoming, Store, StoreTxn, SyncState,
};
use mesh_core::CoreError;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Rows, Transaction,
    TransactionBehavior,
};

use crate::error::StoreError;
use crate::rows::{
    self, count_to_sql, cursor_bits_from_sql, cursor_bits_to_sql, seq_to_sql, PageBuilder,
};

type CoreResult<T> = mesh_core::Result<T>;

/// How long a writer waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, in order: step `n` takes a store from version `n` to `n + 1`.
///
/// Adding version 2 is adding one element; a released step never changes.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value ANY NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('last_seq', 0);

    CREATE TABLE feeds (
        feed_id INTEGER PRIMARY KEY,
        key     TEXT NOT NULL UNIQUE,
        head    INTEGER NOT NULL DEFAULT 0,
        entries INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    CREATE TABLE entries (
        seq     INTEGER PRIMARY KEY,
        feed_id INTEGER NOT NULL REFERENCES feeds (feed_id),
        id      TEXT NOT NULL,
        origin  TEXT,
        body    TEXT NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX entries_by_id ON entries (feed_id, id);
    CREATE INDEX entries_log ON entries (feed_id, seq);

    CREATE TABLE sync_state (
        remote         TEXT NOT NULL,
        feed           TEXT NOT NULL,
        remote_replica TEXT,
        pulled         INTEGER NOT NULL,
        pushed         INTEGER NOT NULL,
        PRIMARY KEY (remote, feed)
    ) STRICT, WITHOUT ROWID;
    ",
    // 2: positions counted per feed; replica-wide numbers kept beside them.
    "
    ALTER TABLE feeds ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    UPDATE feeds SET seq = head;
    ALTER TABLE entries ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;
    UPDATE entries SET pos = seq;
    DROP INDEX entries_log;
    CREATE UNIQUE INDEX entries_pos ON entries (feed_id, pos);
    ",
    // 3: the folders each user has a member record in (`Store::member_folders`), kept as
    // entries are added to `members` feeds and dropped with a purged feed.
    "
    CREATE TABLE members (
        member  TEXT NOT NULL,
        feed_id INTEGER NOT NULL REFERENCES feeds (feed_id),
        PRIMARY KEY (member, feed_id)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO members (member, feed_id)
        SELECT e.id, e.feed_id FROM entries AS e JOIN feeds AS f USING (feed_id)
        WHERE f.key GLOB 'folder:*/members';
    ",
];

/// A kind of mesh SQLite file: the `application_id` that marks it and its migrations.
pub(crate) struct Schema {
    pub application_id: i32,
    pub migrations: &'static [&'static str],
}

impl Schema {
    pub fn version(&self) -> i64 {
        self.migrations.len() as i64
    }
}

const REPLICA_SCHEMA: Schema = Schema {
    application_id: SqliteStore::APPLICATION_ID,
    migrations: MIGRATIONS,
};

/// The tables a store of the current version holds.
const TABLES: &[&str] = &["meta", "feeds", "entries", "sync_state"];

const SQL_LAST_SEQ: &str = "SELECT value FROM meta WHERE key = 'last_seq'";
const SQL_SET_LAST_SEQ: &str = "UPDATE meta SET value = ?1 WHERE key = 'last_seq'";
const SQL_GET: &str = "SELECT id, body FROM entries INDEXED BY entries_by_id
     WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = ?1) AND id = ?2";
const SQL_GET_BY_FEED_ID: &str = "SELECT id, body FROM entries INDEXED BY entries_by_id
     WHERE feed_id = ?1 AND id = ?2";
const SQL_CHANGES: &str = "SELECT pos, origin, id, body FROM entries INDEXED BY entries_pos
     WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = ?1) AND pos > ?2
     ORDER BY pos LIMIT ?3";
const SQL_LIST: &str = "SELECT id, body FROM entries INDEXED BY entries_by_id
     WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = ?1)
     ORDER BY id LIMIT ?2";
const SQL_LIST_AFTER: &str = "SELECT id, body FROM entries INDEXED BY entries_by_id
     WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = ?1) AND id > ?2
     ORDER BY id LIMIT ?3";
const SQL_FEEDS: &str = "SELECT key, head, entries FROM feeds WHERE entries > 0";
const SQL_MOVED: &str = "SELECT key, head, seq FROM feeds WHERE entries > 0";
const SQL_FEED_MOVED: &str = "SELECT head, seq FROM feeds WHERE key = ?1 AND entries > 0";
const SQL_FEED_HEAD: &str = "SELECT head, entries FROM feeds WHERE key = ?1 AND entries > 0";
// Keys from a scope's prefix up to the same text with its last character, `/`, replaced by
// the next one, `0`: every key of the scope, and keys of scopes whose id goes on with a `/`
// (ids may hold one), which the caller drops.
const SQL_SCOPE_FEEDS: &str = "SELECT key, head, entries FROM feeds
    WHERE key >= ?1 AND key < ?2 AND entries > 0 ORDER BY key";
const SQL_MEMBER_FOLDERS: &str = "SELECT f.key FROM members AS m JOIN feeds AS f USING (feed_id)
    WHERE m.member = ?1 AND f.entries > 0";
const SQL_ADD_MEMBER: &str = "INSERT OR IGNORE INTO members (member, feed_id) VALUES (?1, ?2)";
const SQL_SYNC_STATE: &str =
    "SELECT remote_replica, pulled, pushed FROM sync_state WHERE remote = ?1 AND feed = ?2";
const SQL_SET_SYNC_STATE: &str =
    "INSERT INTO sync_state (remote, feed, remote_replica, pulled, pushed)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (remote, feed) DO UPDATE SET
        remote_replica = excluded.remote_replica,
        pulled = excluded.pulled,
        pushed = excluded.pushed";
const SQL_FEED_ID: &str = "SELECT feed_id, head FROM feeds WHERE key = ?1";
const SQL_NEW_FEED: &str = "INSERT INTO feeds (key) VALUES (?1)";
const SQL_UPDATE_FEED: &str =
    "UPDATE feeds SET head = ?2, entries = entries + ?3, seq = ?4 WHERE feed_id = ?1";
const SQL_REPLACE_ENTRY: &str = "UPDATE entries SET seq = ?1, origin = ?2, body = ?3, pos = ?6
     WHERE feed_id = ?4 AND id = ?5";
const SQL_INSERT_ENTRY: &str = "INSERT INTO entries (seq, origin, body, feed_id, id, pos)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// How hard a [`SqliteStore`] works to keep committed transactions on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: every commit is synced to disk before it returns; nothing
    /// acknowledged is lost to a crash of the process *or* of the machine. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL` (in WAL mode): commits survive a crash or kill of the process,
    /// but the last ones may be lost if the machine loses power; each commit saves an fsync.
    Normal,
}

/// A [`Store`] in a SQLite file (or in memory, for tests).
///
/// ```
/// use mesh_store::SqliteStore;
/// use mesh_core::store::Store;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("replica.db");
/// let store = SqliteStore::open(&path, "laptop".parse().unwrap()).unwrap();
/// assert_eq!(store.replica_id().as_str(), "laptop");
/// drop(store);
/// // An existing store keeps its own replica id.
/// let store = SqliteStore::open(&path, "other".parse().unwrap()).unwrap();
/// assert_eq!(store.replica_id().as_str(), "laptop");
/// ```
pub struct SqliteStore {
    conn: Connection,
    replica: ReplicaId,
    location: String,
    /// `synchronous` as opened (`FULL` or `NORMAL`).
    synchronous: &'static str,
    /// Whether relaxed transactions may commit at `synchronous = NORMAL`: in WAL mode only
    /// (where a commit that did not wait for the disk is lost whole or kept whole, and the
    /// next synced commit syncs it too), and only when the store is at `FULL`.
    may_relax: bool,
    /// Whether the connection is at `NORMAL` for a relaxed transaction (set back to
    /// `synchronous` by the next ordinary `begin`).
    relaxed: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .field("replica", &self.replica)
            .finish()
    }
}

impl SqliteStore {
    /// The `application_id` in the header of every mesh store file (`"MESH"`).
    pub const APPLICATION_ID: i32 = 0x4d45_5348;

    /// The schema version this build writes, and the newest it opens.
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    /// Opens the store in file `path`, creating it if the file does not exist (or is empty).
    ///
    /// A new store belongs to replica `new_replica`; an existing one keeps the replica id it
    /// was created with. Fails with [`StoreError::Corrupt`] when the file is not a
    /// database, is damaged, or belongs to another application, and with
    /// [`StoreError::TooNew`] when a newer build of mesh wrote it; such files are left
    /// untouched.
    pub fn open(path: impl AsRef<Path>, new_replica: ReplicaId) -> Result<Self, StoreError> {
        Self::open_with(path, new_replica, Durability::Full)
    }

    /// [`SqliteStore::open`] with a chosen [`Durability`].
    pub fn open_with(
        path: impl AsRef<Path>,
        new_replica: ReplicaId,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        check_header(path, &location)?;
        // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| open_error(&location, e))?;
        let mut store = Self::init(conn, location, new_replica, true)?;
        if durability == Durability::Normal {
            store
                .conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| StoreError::sqlite(store.location.to_string(), e))?;
            store.synchronous = "NORMAL";
            store.may_relax = false;
        }
        Ok(store)
    }

    /// Keeps the database file locked by this store's connection until the store is closed
    /// (SQLite's exclusive locking mode): from its first write on, the whole file. For a
    /// store that has one user by construction, such as a client's under its
    /// [`StoreLock`](crate::StoreLock). Transactions then skip taking and dropping the
    /// file's locks, six to eight system calls each, which every statement outside a
    /// transaction pays too. No other connection or process can read the file meanwhile:
    /// not for a store that is copied while it serves, like a hub's.
    pub fn keep_file_locked(&mut self) -> Result<(), StoreError> {
        hold_file(&self.conn, &self.location)
    }

    /// A new store held in memory, for tests: the same SQL, nothing on disk.
    pub fn open_in_memory(replica: ReplicaId) -> Result<Self, StoreError> {
        let location = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|e| open_error(&location, e))?;
        Self::init(conn, location, replica, false)
    }

    fn init(
        mut conn: Connection,
        location: String,
        new_replica: ReplicaId,
        on_disk: bool,
    ) -> Result<Self, StoreError> {
        let fail = |e: rusqlite::Error| open_error(&location, e);
        tune(&conn).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        conn.set_prepared_statement_cache_capacity(32);

        // Identify the file before changing anything in it: these reads are what fail on a
        // file that is not a database or is damaged.
        let version = identify(&conn, &location, &REPLICA_SCHEMA)?;

        if on_disk && version == 0 {
            // Only a new file can take it.
            conn.pragma_update(None, "page_size", PAGE_SIZE)
                .map_err(fail)?;
        }
        let mut wal = false;
        if on_disk {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(fail)?;
            wal = mode.eq_ignore_ascii_case("wal");
            if !wal {
                tracing::warn!(
                    store = %location,
                    journal_mode = %mode,
                    "SQLite refused WAL mode; using its rollback journal instead"
                );
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.pragma_update(None, "fullfsync", true).map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(fail)?;

        if version < Self::SCHEMA_VERSION {
            migrate(&mut conn, &location, &REPLICA_SCHEMA)?;
        }
        let replica = load_replica_id(&conn, &location, new_replica)?;
        check_meta(&conn, &location)?;
        Ok(SqliteStore {
            conn,
            replica,
            location,
            synchronous: "FULL",
            may_relax: wal,
            relaxed: false,
        })
    }

    /// A value of the store's `meta` table (device key, trust pinned per remote).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| StoreError::sqlite(self.location.to_string(), e))
    }

    /// Sets a value of the store's `meta` table (durably, in its own transaction).
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.relax(false)?;
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| StoreError::sqlite(self.location.to_string(), e))
    }

    /// Where the store lives: its file's path, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Checks the whole file: SQLite's `quick_check`, then the store's own invariants (every
    /// body readable and under its id, feed heads and counts matching the change log, the
    /// sequence counter ahead of every change). Costs O(store size); [`SqliteStore::open`]
    /// does only cheap checks.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.location.clone(),
            reason,
        };
        let fail = |e: rusqlite::Error| open_error(&self.location, e);
        let mut problems = Vec::new();
        self.conn
            .pragma_query(None, "quick_check", |r| {
                problems.push(r.get::<_, String>(0)?);
                Ok(())
            })
            .map_err(fail)?;
        if problems != ["ok"] {
            return Err(corrupt(format!("quick_check: {}", problems.join("; "))));
        }
        let mut orphans = 0usize;
        self.conn
            .pragma_query(None, "foreign_key_check", |_| {
                orphans += 1;
                Ok(())
            })
            .map_err(fail)?;
        if orphans > 0 {
            return Err(corrupt(format!("{orphans} entries of no feed")));
        }
        let bad_feed: Option<String> = self
            .conn
            .query_row(
                "SELECT f.key FROM feeds AS f LEFT JOIN
                   (SELECT feed_id, count(*) AS n, max(pos) AS h, max(seq) AS s
                    FROM entries GROUP BY feed_id)
                   AS e USING (feed_id)
                 WHERE f.entries != ifnull(e.n, 0)
                    OR (e.n IS NOT NULL AND (f.head != e.h OR f.seq != e.s)) LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(fail)?;
        if let Some(key) = bad_feed {
            return Err(corrupt(format!(
                "head or entry count of feed {key} does not match its change log"
            )));
        }
        let unindexed: Option<String> = self
            .conn
            .query_row(
                "SELECT f.key FROM entries AS e JOIN feeds AS f USING (feed_id)
                 WHERE f.key GLOB 'folder:*/members' AND NOT EXISTS
                   (SELECT 1 FROM members AS m WHERE m.member = e.id AND m.feed_id = e.feed_id)
                 UNION ALL
                 SELECT f.key FROM members AS m JOIN feeds AS f USING (feed_id)
                 WHERE NOT EXISTS
                   (SELECT 1 FROM entries AS e WHERE e.feed_id = m.feed_id AND e.id = m.member)
                 LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(fail)?;
        if let Some(key) = unindexed {
            return Err(corrupt(format!(
                "the index of member records does not match feed {key}"
            )));
        }
        let last_seq = read_last_seq(&self.conn).map_err(|e| corrupt(e.to_string()))?;
        let max_seq: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM entries", [], |r| r.get(0))
            .map_err(fail)?;
        if max_seq.unwrap_or(0) > i64::try_from(last_seq).unwrap_or(i64::MAX) {
            return Err(corrupt(
                "the sequence counter is behind the change log".into(),
            ));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT f.key, e.id, e.body FROM entries AS e JOIN feeds AS f USING (feed_id)")
            .map_err(fail)?;
        let mut rows = stmt.query([]).map_err(fail)?;
        while let Some(row) = rows.next().map_err(fail)? {
            let key = text(row, 0, "feed key").map_err(|e| corrupt(e.to_string()))?;
            let id = text(row, 1, "entry id").map_err(|e| corrupt(e.to_string()))?;
            let body = text(row, 2, "entry body").map_err(|e| corrupt(e.to_string()))?;
            key.parse::<FeedKey>()
                .map_err(|e| corrupt(format!("feed key {key:?}: {e}")))?;
            decode_entry(key, id, body).map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// Closes the store, reporting any error SQLite meets while doing so (dropping the store
    /// closes it too, silently).
    pub fn close(self) -> Result<(), StoreError> {
        let location = self.location;
        self.conn
            .close()
            .map_err(|(_, e)| StoreError::Backend(format!("{location}: closing: {e}")))
    }
}

/// Settings the connections of the replica, blob and accounts stores take, before anything
/// else.
///
/// The query planner's stability guarantee: plans never depend on the values bound to a
/// statement. Without it the bundled SQLite (3.50) takes a bound `LIMIT ?` for a constant while
/// planning, marks the statement to be planned again whenever that parameter is bound anew,
/// and so parses and plans a cached statement over again on nearly every call (a page read
/// asks for `limit + 1` rows, which varies). The statements here name their index where the
/// plan matters (`INDEXED BY`), so nothing is lost by it.
pub(crate) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Puts `conn` in SQLite's exclusive locking mode (see [`SqliteStore::keep_file_locked`]):
/// the locks its next transactions take are kept, a reader's from the first read on and
/// the whole file from the first write on.
pub(crate) fn hold_file(conn: &Connection, location: &str) -> Result<(), StoreError> {
    let mode: String = conn
        .pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |r| r.get(0))
        .map_err(|e| StoreError::sqlite(location, e))?;
    if !mode.eq_ignore_ascii_case("exclusive") {
        return Err(StoreError::Backend(format!(
            "{location}: SQLite kept locking mode {mode}"
        )));
    }
    Ok(())
}

/// The page size of a new replica file (SQLite's default is 4 KiB). Entries are appended in
/// the order of their positions and, with time-ordered ids, of their ids too, so a large
/// commit writes whole pages: larger ones take fewer system calls per byte, to the log and
/// again at each checkpoint, and waste less of each page on entries of about a KiB. But a
/// one-entry commit writes each tree's last page whole. Measured on the initial sync of
/// 100,000 entries and the one-entry sync: 8 KiB took about 14% off the first and nothing
/// measurable from the second; 16 KiB gained no more and added about 0.14 ms to the second.
pub(crate) const PAGE_SIZE: i64 = 8_192;

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a file that is not empty and does not start like a SQLite database. SQLite itself
/// takes a file shorter than its header for an empty database and would write over it.
pub(crate) fn check_header(path: &Path, location: &str) -> Result<(), StoreError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        // Missing (to be created) or unreadable: SQLite reports what is wrong.
        Err(_) => return Ok(()),
    };
    let io = |e| StoreError::Io {
        path: path.to_owned(),
        source: e,
    };
    let mut head = Vec::with_capacity(HEADER_PAGE_SIZE_END);
    file.by_ref()
        .take(HEADER_PAGE_SIZE_END as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        path: location.to_owned(),
        reason,
    };
    if head.is_empty() {
        return Ok(());
    }
    if !head.starts_with(SQLITE_MAGIC) {
        return Err(corrupt("not a database (no SQLite header)".into()));
    }
    // A file cut short inside a page: SQLite would read the rest of that page as zeros,
    // and the cheap checks of an open need not touch it. Pages are written whole, so a
    // file at rest that is not a whole number of them was cut (a shorter header is
    // SQLite's to refuse). Not while a log beside it is not empty: a writer may be
    // extending the file that moment (the size grows a memory page at a time), and after a
    // crash SQLite restores the file from its log.
    if let (&[hi, lo], false) = (&head[SQLITE_MAGIC.len()..], log_beside(path)) {
        let page = match u16::from_be_bytes([hi, lo]) {
            1 => 65_536,
            n => u64::from(n),
        };
        if !page.is_power_of_two() || !(512..=65_536).contains(&page) {
            return Err(corrupt(format!("invalid page size {page}")));
        }
        let len = file.metadata().map_err(io)?.len();
        if len % page != 0 {
            return Err(corrupt(format!(
                "truncated: {len} bytes is not a whole number of {page}-byte pages"
            )));
        }
    }
    Ok(())
}

/// Whether the write-ahead log or rollback journal beside the database at `path` holds
/// anything (a writer is at work, or SQLite has a crash to recover from).
fn log_beside(path: &Path) -> bool {
    ["-wal", "-journal"].iter().any(|suffix| {
        let mut log = path.as_os_str().to_owned();
        log.push(suffix);
        std::fs::metadata(log).is_ok_and(|m| m.len() > 0)
    })
}

/// Where the page size ends in a SQLite file's header (two bytes after the magic string).
const HEADER_PAGE_SIZE_END: usize = 18;

/// Checks that the file is a mesh store this build can open (or a new, empty database), and
/// returns its schema version (0 for a new database).
pub(crate) fn identify(
    conn: &Connection,
    location: &str,
    schema: &Schema,
) -> Result<i64, StoreError> {
    let fail = |e: rusqlite::Error| open_error(location, e);
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(fail)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(fail)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(fail)?;
    let not_ours = || StoreError::Corrupt {
        path: location.to_owned(),
        reason: "not a mesh store".into(),
    };
    if app_id == 0 && version == 0 && objects == 0 {
        return Ok(0); // A new (or empty) database: migrations create the store.
    }
    if app_id != schema.application_id {
        return Err(not_ours());
    }
    check_version(version, location, schema)?;
    Ok(version)
}

fn check_version(version: i64, location: &str, schema: &Schema) -> Result<(), StoreError> {
    if version > schema.version() {
        return Err(StoreError::TooNew {
            found: version,
            supported: schema.version(),
        });
    }
    if version < 0 {
        return Err(StoreError::Corrupt {
            path: location.to_owned(),
            reason: format!("invalid schema version {version}"),
        });
    }
    Ok(())
}

/// Applies the missing migrations, each in its own transaction with its version bump. The
/// version is read again inside each transaction, so two processes opening a new file at once
/// do not both migrate it.
pub(crate) fn migrate(
    conn: &mut Connection,
    location: &str,
    schema: &Schema,
) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| open_error(location, e);
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        check_version(version, location, schema)?;
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| schema.migrations.get(v))
        else {
            // Up to date; nothing was written.
            return tx.commit().map_err(fail);
        };
        tx.execute_batch(step).map_err(|e| {
            StoreError::Backend(format!(
                "{location}: migrating to schema version {}: {e}",
                version + 1
            ))
        })?;
        if version == 0 {
            tx.pragma_update(None, "application_id", schema.application_id)
                .map_err(fail)?;
        }
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::debug!(store = %location, version = version + 1, "migrated store schema");
    }
}

/// The store's replica id, recording `new_replica` if the store has none yet (it was just
/// created).
fn load_replica_id(
    conn: &Connection,
    location: &str,
    new_replica: ReplicaId,
) -> Result<ReplicaId, StoreError> {
    let fail = |e: rusqlite::Error| open_error(location, e);
    let read = || -> Result<Option<String>, StoreError> {
        conn.query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = 'replica_id'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(fail)
    };
    let stored = match read()? {
        Some(s) => s,
        None => {
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('replica_id', ?1)",
                [new_replica.as_str()],
            )
            .map_err(fail)?;
            read()?.ok_or_else(|| StoreError::Backend(format!("{location}: no replica id")))?
        }
    };
    ReplicaId::new(&stored).map_err(|e| StoreError::Corrupt {
        path: location.to_owned(),
        reason: format!("stored replica id is unusable: {e}"),
    })
}

/// Cheap consistency checks on open: the tables exist and the sequence counter is sane.
fn check_meta(conn: &Connection, location: &str) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| open_error(location, e);
    let corrupt = |reason: String| StoreError::Corrupt {
        path: location.to_owned(),
        reason,
    };
    for table in TABLES {
        let found: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()
            .map_err(fail)?;
        if found.is_none() {
            return Err(corrupt(format!("table {table} is missing")));
        }
    }
    let last_seq = read_last_seq(conn).map_err(|e| corrupt(e.to_string()))?;
    let max_seq: Option<i64> = conn
        .query_row("SELECT max(seq) FROM entries", [], |r| r.get(0))
        .map_err(fail)?;
    if max_seq.unwrap_or(0) > i64::try_from(last_seq).unwrap_or(i64::MAX) {
        return Err(corrupt(format!(
            "the sequence counter {last_seq} is behind the change log ({})",
            max_seq.unwrap_or(0)
        )));
    }
    Ok(())
}

/// Maps an error met while opening or checking a store: SQLite's "not a database" and
/// "malformed" mean a corrupt store; anything else is a plain store failure.
pub(crate) fn open_error(location: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: location.to_owned(),
            reason: format!("not a database ({e})"),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: location.to_owned(),
            reason: format!("damaged database ({e})"),
        },
        _ => StoreError::sqlite(location.to_string(), e),
    }
}

/// Maps a SQLite error met by a store operation into the core's error.
fn db(what: &'static str) -> impl Fn(rusqlite::Error) -> CoreError {
    move |e| CoreError::Store(format!("sqlite: {what}: {e}"))
}

fn text<'r>(row: &'r Row<'_>, idx: usize, what: &'static str) -> CoreResult<&'r str> {
    row.get_ref(idx)
        .map_err(db(what))?
        .as_str()
        .map_err(|e| CoreError::Store(format!("sqlite: {what}: {e}")))
}

fn read_last_seq(conn: &Connection) -> CoreResult<u64> {
    let v: i64 = conn
        .prepare_cached(SQL_LAST_SEQ)
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db("reading the sequence counter"))?;
    u64::try_from(v).map_err(|_| CoreError::Store(format!("sqlite: invalid sequence counter {v}")))
}

fn seq_from_sql(v: i64) -> CoreResult<Cursor> {
    rows::seq_from_sql("sqlite", v)
}

fn decode_entry(
    feed: &(impl std::fmt::Display + ?Sized),
    id: &str,
    body: &str,
) -> CoreResult<Entry> {
    rows::decode_entry("sqlite", feed, id, body)
}

fn get_entry(conn: &Connection, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Entry>> {
    let key = feed.to_string();
    let mut stmt = conn.prepare_cached(SQL_GET).map_err(db("get"))?;
    let mut rows = stmt.query(params![key, id.as_str()]).map_err(db("get"))?;
    first_entry(&mut rows, &key, "get")
}

/// The entries `ids` of the feed whose key is `key` (row id `feed_id` when the caller knows
/// it), in the order asked: the feed's row is looked up once, then each id in the index of
/// entries by id through one statement.
fn read_entries(
    conn: &Connection,
    feed_id: Option<i64>,
    key: &str,
    ids: &[EntryId],
    what: &'static str,
) -> CoreResult<Vec<Option<Entry>>> {
    let feed_id = match feed_id {
        Some(id) => Some(id),
        None => conn
            .prepare_cached(SQL_FEED_ID)
            .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
            .map_err(db(what))?,
    };
    let Some(feed_id) = feed_id else {
        return Ok(vec![None; ids.len()]);
    };
    let mut stmt = conn.prepare_cached(SQL_GET_BY_FEED_ID).map_err(db(what))?;
    ids.iter()
        .map(|id| {
            let mut rows = stmt
                .query(params![feed_id, id.as_str()])
                .map_err(db(what))?;
            first_entry(&mut rows, key, what)
        })
        .collect()
}

/// Runs `f` inside one read transaction on `conn`, or inside the one already open there.
/// Each statement outside a transaction is a transaction of its own, taking and dropping the
/// file's or the log's locks (system calls that can cost more than the statement): a batch
/// of reads pays that once, and reads one snapshot.
pub(crate) fn in_read<T, E>(
    conn: &Connection,
    fail: impl Fn(rusqlite::Error) -> E,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E> {
    if !conn.is_autocommit() {
        return f(conn);
    }
    let tx = conn.unchecked_transaction().map_err(&fail)?;
    let out = f(&tx)?;
    tx.commit().map_err(fail)?;
    Ok(out)
}

/// The entry of the first row of a `SELECT id, body` of the feed `key`, if there is one.
/// The key is written out only into a decoding error: a merge of new entries looks up each one
/// and finds none, and one that finds an entry decodes it without it.
fn first_entry(
    rows: &mut Rows<'_>,
    key: &(impl std::fmt::Display + ?Sized),
    what: &'static str,
) -> CoreResult<Option<Entry>> {
    match rows.next().map_err(db(what))? {
        Some(row) => Ok(Some(decode_entry(
            key,
            text(row, 0, "entry id")?,
            text(row, 1, "entry body")?,
        )?)),
        None => Ok(None),
    }
}

impl Store for SqliteStore {
    type Txn<'a> = SqliteTxn<'a>;

    fn replica_id(&self) -> ReplicaId {
        self.replica.clone()
    }

    fn feeds(&self) -> CoreResult<Vec<FeedHead>> {
        let mut stmt = self.conn.prepare_cached(SQL_FEEDS).map_err(db("feeds"))?;
        let mut rows = stmt.query([]).map_err(db("feeds"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db("feeds"))? {
            let key = text(row, 0, "feed key")?;
            let feed = rows::feed_key("sqlite", key)?;
            let head = row.get(1).map_err(db("feed head"))?;
            let entries = row.get(2).map_err(db("feed entry count"))?;
            out.push(rows::feed_head("sqlite", feed, head, entries)?);
        }
        out.sort_by(|a, b| a.feed.cmp(&b.feed));
        Ok(out)
    }

    fn moved_feeds(&self) -> CoreResult<Vec<FeedMoved>> {
        let mut stmt = self.conn.prepare_cached(SQL_MOVED).map_err(db("moved"))?;
        let mut rows = stmt.query([]).map_err(db("moved"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db("moved"))? {
            let key = text(row, 0, "feed key")?;
            out.push(FeedMoved {
                feed: rows::feed_key("sqlite", key)?,
                head: seq_from_sql(row.get(1).map_err(db("feed head"))?)?,
                seq: seq_from_sql(row.get(2).map_err(db("feed seq"))?)?.0,
            });
        }
        Ok(out)
    }

    fn feed_moved(&self, feed: &FeedKey) -> CoreResult<Option<FeedMoved>> {
        let row = self.feed_row(SQL_FEED_MOVED, feed, "moved")?;
        row.map(|(head, seq)| {
            Ok(FeedMoved {
                feed: feed.clone(),
                head: seq_from_sql(head)?,
                seq: seq_from_sql(seq)?.0,
            })
        })
        .transpose()
    }

    fn last_moved(&self) -> CoreResult<u64> {
        read_last_seq(&self.conn)
    }

    fn feed_head(&self, feed: &FeedKey) -> CoreResult<Option<FeedHead>> {
        let row = self.feed_row(SQL_FEED_HEAD, feed, "feed head")?;
        row.map(|(head, entries)| rows::feed_head("sqlite", feed.clone(), head, entries))
            .transpose()
    }

    fn scope_feeds(&self, scope: &Scope) -> CoreResult<Vec<FeedHead>> {
        let (from, to) = rows::scope_range(scope);
        let mut stmt = self
            .conn
            .prepare_cached(SQL_SCOPE_FEEDS)
            .map_err(db("scope feeds"))?;
        let mut rows = stmt.query([from, to]).map_err(db("scope feeds"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db("scope feeds"))? {
            let row = (|| Ok::<_, rusqlite::Error>((r.get(0)?, r.get(1)?, r.get(2)?)))();
            let (key, head, entries): (String, i64, i64) = row.map_err(db("scope feeds"))?;
            out.extend(rows::scope_head("sqlite", scope, &key, head, entries)?);
        }
        Ok(out)
    }

    fn member_folders(&self, user: &UserId) -> CoreResult<Vec<FolderId>> {
        let mut stmt = self
            .conn
            .prepare_cached(SQL_MEMBER_FOLDERS)
            .map_err(db("member folders"))?;
        let keys = stmt
            .query_map([user.as_str()], |r| r.get::<_, String>(0))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(db("member folders"))?;
        rows::member_folders("sqlite", keys.iter().map(String::as_str))
    }

    fn get(&self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Entry>> {
        get_entry(&self.conn, feed, id)
    }

    /// The feed's row is looked up once, then each id in the index of entries by id (a
    /// push's page asks for up to 500: the lookup by feed key cost as much as the rest), all
    /// in one read transaction: outside one, every statement takes and drops the log's read
    /// lock, system calls that cost more than the lookup itself.
    fn get_many(&self, feed: &FeedKey, ids: &[EntryId]) -> CoreResult<Vec<Option<Entry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = feed.to_string();
        in_read(&self.conn, db("get_many"), |conn| {
            read_entries(conn, None, &key, ids, "get_many")
        })
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
            decode_entry(key, text(row, 2, "entry id")?, text(row, 3, "entry body")?)
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
            let body = text(row, 3, "entry body")?.to_owned();
            rows::encoded_entry("sqlite", key, text(row, 2, "entry id")?, body)
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
        let mut stmt;
        let mut rows = match after {
            None => {
                stmt = self.conn.prepare_cached(SQL_LIST).map_err(db("list"))?;
                stmt.query(params![key, limit])
            }
            Some(after) => {
                stmt = self
                    .conn
                    .prepare_cached(SQL_LIST_AFTER)
                    .map_err(db("list"))?;
                stmt.query(params![key, after.as_str(), limit])
            }
        }
        .map_err(db("list"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db("list"))? {
            out.push(decode_entry(
                &key,
                text(row, 0, "entry id")?,
                text(row, 1, "entry body")?,
            )?);
        }
        Ok(out)
    }

    fn sync_state(&self, remote: &RemoteId, feed: &FeedKey) -> CoreResult<SyncState> {
        let mut stmt = self
            .conn
            .prepare_cached(SQL_SYNC_STATE)
            .map_err(db("sync_state"))?;
        let mut rows = stmt
            .query(params![remote.as_str(), feed.to_string()])
            .map_err(db("sync_state"))?;
        let Some(row) = rows.next().map_err(db("sync_state"))? else {
            return Ok(SyncState::default());
        };
        let remote_replica: Option<String> = row.get(0).map_err(db("sync_state"))?;
        let remote_replica = remote_replica
            .map(|s| {
                ReplicaId::new(&s).map_err(|e| {
                    CoreError::Store(format!(
                        "sqlite: sync state of {feed} with {remote}: unusable replica id: {e}"
                    ))
                })
            })
            .transpose()?;
        Ok(SyncState {
            remote_replica,
            pulled: cursor_bits_from_sql(row.get(1).map_err(db("sync_state"))?),
            pushed: cursor_bits_from_sql(row.get(2).map_err(db("sync_state"))?),
        })
    }

    fn purge_feed(&mut self, feed: &FeedKey) -> CoreResult<u64> {
        self.relax(false)?;
        let key = feed.to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("purge"))?;
        let n = tx
            .execute(
                "DELETE FROM entries WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = ?1)",
                [&key],
            )
            .and_then(|n| {
                tx.execute(
                    "DELETE FROM members WHERE feed_id = (SELECT feed_id FROM feeds WHERE key = ?1)",
                    [&key],
                )?;
                tx.execute("DELETE FROM sync_state WHERE feed = ?1", [&key])?;
                // The row stays, with its head: positions continue after it.
                tx.execute("UPDATE feeds SET entries = 0 WHERE key = ?1", [&key])?;
                Ok(n)
            })
            .map_err(db("purge"))?;
        tx.commit().map_err(db("purge"))?;
        Ok(n as u64)
    }

    fn begin(&mut self) -> CoreResult<SqliteTxn<'_>> {
        self.relax(false)?;
        self.begin_txn()
    }

    fn begin_relaxed(&mut self) -> CoreResult<SqliteTxn<'_>> {
        self.relax(true)?;
        self.begin_txn()
    }
}

impl SqliteStore {
    /// Reads `feed`'s change-log records after `since` into `page`, making each change it
    /// wants with `change` (from the feed's key and the record: position, origin, entry id,
    /// body).
    fn read_changes<T: rows::PageItem>(
        &self,
        feed: &FeedKey,
        since: Cursor,
        page: &mut PageBuilder<'_, T>,
        change: impl Fn(&str, &Row<'_>) -> CoreResult<T>,
    ) -> CoreResult<()> {
        let key = feed.to_string();
        let mut stmt = self
            .conn
            .prepare_cached(SQL_CHANGES)
            .map_err(db("changes_since"))?;
        let mut rows = stmt
            .query(params![key, seq_to_sql(since), page.fetch()])
            .map_err(db("changes_since"))?;
        while let Some(row) = rows.next().map_err(db("changes_since"))? {
            if page.full() {
                break;
            }
            let seq = seq_from_sql(row.get(0).map_err(db("change position"))?)?;
            let origin = || {
                let v = row.get_ref(1).map_err(db("change origin"))?;
                let s = v
                    .as_str_or_null()
                    .map_err(|e| CoreError::Store(format!("sqlite: change origin: {e}")))?;
                Ok(s.map(str::to_owned))
            };
            if page.wants(seq, origin)? {
                page.push(seq, change(&key, row)?);
            }
        }
        Ok(())
    }

    /// The two numbers `sql` reads from the row of one feed (`?1`, its key), if it has one.
    fn feed_row(
        &self,
        sql: &str,
        feed: &FeedKey,
        what: &'static str,
    ) -> CoreResult<Option<(i64, i64)>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row([feed.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db(what))
    }

    /// Puts the connection at `synchronous = NORMAL` for a relaxed transaction, or back at
    /// the store's own level (the setting cannot change inside a transaction).
    fn relax(&mut self, relaxed: bool) -> CoreResult<()> {
        let relaxed = relaxed && self.may_relax;
        if relaxed != self.relaxed {
            let level = if relaxed { "NORMAL" } else { self.synchronous };
            self.conn
                .pragma_update(None, "synchronous", level)
                .map_err(db("synchronous"))?;
            self.relaxed = relaxed;
        }
        Ok(())
    }

    fn begin_txn(&mut self) -> CoreResult<SqliteTxn<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin"))?;
        let last_seq = read_last_seq(&tx)?;
        Ok(SqliteTxn {
            tx,
            start_seq: last_seq,
            last_seq,
            feeds: HashMap::new(),
            absent: None,
            fetched: HashMap::new(),
        })
    }
}

/// What a transaction changed in one feed, written to `feeds` on commit.
struct TxnFeed {
    feed_id: i64,
    /// The feed's head (as the transaction left it).
    head: Cursor,
    /// The replica-wide number of the transaction's latest change to the feed, if any.
    seq: Option<Cursor>,
    added: i64,
}

/// A transaction on a [`SqliteStore`]: an immediate SQLite transaction (it holds the write lock
/// from the start, so it never fails half-way for lack of it). Dropping it without
/// [`StoreTxn::commit`] rolls it back.
pub struct SqliteTxn<'a> {
    tx: Transaction<'a>,
    start_seq: u64,
    last_seq: u64,
    feeds: HashMap<FeedKey, TxnFeed>,
    /// The entry the last `get` found absent: a `put` of it right after can insert without
    /// first trying to replace (the usual create and merge-of-a-new-entry path).
    absent: Option<(FeedKey, EntryId)>,
    /// Entries read ahead by `prefetch`, per feed, each given out once by `get` (a write to
    /// one drops it first).
    fetched: HashMap<FeedKey, HashMap<EntryId, Option<Entry>>>,
}

impl std::fmt::Debug for SqliteTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTxn")
            .field("start_seq", &self.start_seq)
            .field("last_seq", &self.last_seq)
            .finish()
    }
}

impl SqliteTxn<'_> {
    /// The row id of `feed`, creating the feed's row on its first write.
    fn feed_id(&mut self, feed: &FeedKey) -> CoreResult<i64> {
        if let Some(f) = self.feeds.get(feed) {
            return Ok(f.feed_id);
        }
        let key = feed.to_string();
        let existing: Option<(i64, i64)> = self
            .tx
            .prepare_cached(SQL_FEED_ID)
            .and_then(|mut s| {
                s.query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db("looking up a feed"))?;
        let (feed_id, head) = match existing {
            Some((id, head)) => (id, seq_from_sql(head)?),
            None => {
                self.tx
                    .prepare_cached(SQL_NEW_FEED)
                    .and_then(|mut s| s.execute([&key]))
                    .map_err(db("creating a feed"))?;
                (self.tx.last_insert_rowid(), Cursor::ZERO)
            }
        };
        self.feeds.insert(
            feed.clone(),
            TxnFeed {
                feed_id,
                head,
                seq: None,
                added: 0,
            },
        );
        Ok(feed_id)
    }

    /// Stores `entry`, whose JSON is `body`, at the feed's next position (see
    /// [`StoreTxn::put`]).
    fn put_json(
        &mut self,
        feed: &FeedKey,
        entry: &Entry,
        body: &str,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        if let Some(ahead) = self.fetched.get_mut(feed) {
            ahead.remove(&entry.sync.id);
        }
        let next = |n| rows::next_number("sqlite", n);
        let seq = next(self.last_seq)?;
        let feed_id = self.feed_id(feed)?;
        let pos = next(self.feeds.get(feed).map_or(0, |f| f.head.0))?;
        let args = params![
            seq_to_sql(seq),
            origin.map(ReplicaId::as_str),
            body,
            feed_id,
            entry.sync.id.as_str(),
            seq_to_sql(pos)
        ];
        let known_absent = self
            .absent
            .take()
            .is_some_and(|(f, i)| &f == feed && i == entry.sync.id);
        let replaced = if known_absent {
            0
        } else {
            self.tx
                .prepare_cached(SQL_REPLACE_ENTRY)
                .and_then(|mut s| s.execute(args))
                .map_err(db("replacing an entry"))?
        };
        let added = if replaced == 0 {
            self.tx
                .prepare_cached(SQL_INSERT_ENTRY)
                .and_then(|mut s| s.execute(args))
                .map_err(db("inserting an entry"))?;
            if feed.members_folder().is_some() {
                self.tx
                    .prepare_cached(SQL_ADD_MEMBER)
                    .and_then(|mut s| s.execute(params![entry.sync.id.as_str(), feed_id]))
                    .map_err(db("indexing a member"))?;
            }
            1
        } else {
            0
        };
        if let Some(f) = self.feeds.get_mut(feed) {
            f.head = pos;
            f.seq = Some(seq);
            f.added += added;
        }
        self.last_seq = seq.0;
        Ok(pos)
    }
}

impl StoreTxn for SqliteTxn<'_> {
    fn get(&mut self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Cow<'_, Entry>>> {
        let ahead = self.fetched.get_mut(feed).and_then(|f| f.remove(id));
        let found = match (ahead, self.feeds.get(feed)) {
            (Some(found), _) => found,
            // The feed's row id is known: skip the key lookup.
            (None, Some(f)) => {
                let mut stmt = self
                    .tx
                    .prepare_cached(SQL_GET_BY_FEED_ID)
                    .map_err(db("get"))?;
                let mut rows = stmt
                    .query(params![f.feed_id, id.as_str()])
                    .map_err(db("get"))?;
                first_entry(&mut rows, feed, "get")?
            }
            (None, None) => get_entry(&self.tx, feed, id)?,
        };
        self.absent = found.is_none().then(|| (feed.clone(), id.clone()));
        Ok(found.map(Cow::Owned))
    }

    /// Reads the entries in one pass over one statement, for `get` to give out.
    fn prefetch(&mut self, feed: &FeedKey, ids: &[EntryId]) -> CoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = feed.to_string();
        let feed_id = self.feeds.get(feed).map(|f| f.feed_id);
        let found = read_entries(&self.tx, feed_id, &key, ids, "prefetch")?;
        self.fetched
            .entry(feed.clone())
            .or_default()
            .extend(ids.iter().cloned().zip(found));
        Ok(())
    }

    fn put(
        &mut self,
        feed: &FeedKey,
        entry: Entry,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        let body = entry.to_json()?;
        self.put_json(feed, &entry, &body, origin)
    }

    fn put_incoming(
        &mut self,
        feed: &FeedKey,
        entry: Incoming,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        match entry.into_parts() {
            (entry, Some(body)) => {
                debug_assert_eq!(serde_json::to_string(&entry).ok(), Some(body.clone()));
                self.put_json(feed, &entry, &body, origin)
            }
            (entry, None) => self.put(feed, entry, origin),
        }
    }

    fn set_sync_state(
        &mut self,
        remote: &RemoteId,
        feed: &FeedKey,
        state: &SyncState,
    ) -> CoreResult<()> {
        self.tx
            .prepare_cached(SQL_SET_SYNC_STATE)
            .and_then(|mut s| {
                s.execute(params![
                    remote.as_str(),
                    feed.to_string(),
                    state.remote_replica.as_ref().map(ReplicaId::as_str),
                    cursor_bits_to_sql(state.pulled),
                    cursor_bits_to_sql(state.pushed),
                ])
            })
            .map_err(db("set_sync_state"))?;
        Ok(())
    }

    fn commit(self) -> CoreResult<()> {
        for f in self.feeds.values() {
            let Some(seq) = f.seq else { continue };
            self.tx
                .prepare_cached(SQL_UPDATE_FEED)
                .and_then(|mut s| {
                    s.execute(params![
                        f.feed_id,
                        seq_to_sql(f.head),
                        f.added,
                        seq_to_sql(seq)
                    ])
                })
                .map_err(db("updating a feed head"))?;
        }
        if self.last_seq != self.start_seq {
            self.tx
                .prepare_cached(SQL_SET_LAST_SEQ)
                .and_then(|mut s| s.execute([seq_to_sql(Cursor(self.last_seq))]))
                .map_err(db("advancing the sequence counter"))?;
        }
        self.tx.commit().map_err(db("commit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached statement is planned once: reading pages with a new limit each time does not
    /// make SQLite parse and plan it again (see [`tune`]).
    #[test]
    fn page_reads_keep_their_plan() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("r.db"), "r1".parse().unwrap()).unwrap();
        let feed = FeedKey::folder("f1".parse().unwrap(), "notes".parse().unwrap());
        for limit in 1..20 {
            s.changes_since(&feed, Cursor(limit as u64), limit, None)
                .unwrap();
            s.list(&feed, None, limit).unwrap();
        }
        for sql in [SQL_CHANGES, SQL_LIST] {
            let st = s.conn.prepare_cached(sql).unwrap();
            let planned_again = st.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(planned_again, 0, "{sql}");
        }
    }

    /// A store kept locked holds its file from its first write on, until it is closed, and
    /// works as before meanwhile (relaxed commits included).
    #[test]
    fn a_store_kept_locked_shuts_out_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let other = || {
            let c = Connection::open(&path).unwrap();
            c.busy_timeout(std::time::Duration::ZERO).unwrap();
            c.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
        };
        let before;
        {
            let mut s = SqliteStore::open(&path, "r1".parse().unwrap()).unwrap();
            s.set_meta("k", "v").unwrap();
            before = other().unwrap();
            s.keep_file_locked().unwrap();
            s.set_meta("k2", "v2").unwrap();
            assert!(
                other().is_err(),
                "another connection read a store kept locked"
            );
            commit_cursor(&mut s, true);
            commit_cursor(&mut s, false);
            assert_eq!(s.meta("k2").unwrap().as_deref(), Some("v2"));
        }
        assert_eq!(other().unwrap(), before + 1);
        let s = SqliteStore::open(&path, "r2".parse().unwrap()).unwrap();
        assert_eq!(s.replica_id().as_str(), "r1");
        assert_eq!(s.meta("k2").unwrap().as_deref(), Some("v2"));
    }

    /// `get_many` reads in a transaction of its own and ends it, found or not, and does not
    /// end one it did not begin.
    #[test]
    fn get_many_leaves_the_connection_as_it_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("r.db"), "r1".parse().unwrap()).unwrap();
        let feed = FeedKey::folder("f1".parse().unwrap(), "notes".parse().unwrap());
        let ids: Vec<EntryId> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
        for f in [
            &feed,
            &FeedKey::folder("f2".parse().unwrap(), "x".parse().unwrap()),
        ] {
            assert_eq!(s.get_many(f, &ids).unwrap(), vec![None, None]);
            assert!(s.conn.is_autocommit(), "get_many left a transaction open");
        }
        commit_cursor(&mut s, false);
        s.conn.execute_batch("BEGIN").unwrap();
        s.get_many(&feed, &ids).unwrap();
        assert!(
            !s.conn.is_autocommit(),
            "get_many ended the caller's transaction"
        );
        s.conn.execute_batch("COMMIT").unwrap();
    }

    fn synchronous(s: &SqliteStore) -> i64 {
        s.conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    fn commit_cursor(s: &mut SqliteStore, relaxed: bool) {
        let remote: RemoteId = "hub".parse().unwrap();
        let feed = FeedKey::folder("f1".parse().unwrap(), "notes".parse().unwrap());
        let mut tx = if relaxed {
            s.begin_relaxed().unwrap()
        } else {
            s.begin().unwrap()
        };
        tx.set_sync_state(&remote, &feed, &SyncState::default())
            .unwrap();
        tx.commit().unwrap();
    }

    /// A relaxed transaction commits without waiting for the disk (`NORMAL`, in WAL mode),
    /// and every other write after it is back at the store's own level: an ordinary
    /// transaction, a purge, a `meta` value.
    #[test]
    fn only_relaxed_transactions_skip_the_sync() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("r.db"), "r1".parse().unwrap()).unwrap();
        assert_eq!(synchronous(&s), FULL);
        commit_cursor(&mut s, true);
        assert_eq!(synchronous(&s), NORMAL);
        commit_cursor(&mut s, false);
        assert_eq!(synchronous(&s), FULL);
        commit_cursor(&mut s, true);
        s.set_meta("k", "v").unwrap();
        assert_eq!(synchronous(&s), FULL);
        commit_cursor(&mut s, true);
        s.purge_feed(&FeedKey::folder(
            "f1".parse().unwrap(),
            "notes".parse().unwrap(),
        ))
        .unwrap();
        assert_eq!(synchronous(&s), FULL);

        // A store opened at NORMAL stays there; one without WAL (in memory here) is never
        // relaxed.
        let mut n = SqliteStore::open_with(
            dir.path().join("n.db"),
            "r2".parse().unwrap(),
            Durability::Normal,
        )
        .unwrap();
        commit_cursor(&mut n, true);
        commit_cursor(&mut n, false);
        assert_eq!(synchronous(&n), NORMAL);
        let mut m = SqliteStore::open_in_memory("r3".parse().unwrap()).unwrap();
        commit_cursor(&mut m, true);
        assert_eq!(synchronous(&m), FULL);
    }
}
