//! The PostgreSQL schema, as numbered migrations.

use tokio_postgres::Client;

use crate::error::{Result, StoreError};

/// The schema migrations, in order: step `n` takes a database from version `n` to `n + 1`.
/// A released step never changes; adding a version is adding one element.
pub const MIGRATIONS: &[&str] = &[
    // 1: the replica (change log numbered replica-wide), its sync states; accounts (users,
    // devices, token hashes, certificates, hub keys); objects (blob chunks and manifests)
    // and the folders that claim them.
    "
    CREATE TABLE mesh_replica (
        one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        id       TEXT NOT NULL,
        last_seq BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE mesh_feeds (
        feed_id BIGSERIAL PRIMARY KEY,
        key     TEXT NOT NULL UNIQUE,
        head    BIGINT NOT NULL DEFAULT 0,
        entries BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE mesh_entries (
        feed_id BIGINT NOT NULL REFERENCES mesh_feeds (feed_id),
        id      TEXT NOT NULL,
        seq     BIGINT NOT NULL,
        origin  TEXT,
        body    TEXT NOT NULL,
        PRIMARY KEY (feed_id, id)
    );
    CREATE UNIQUE INDEX mesh_entries_log ON mesh_entries (feed_id, seq);
    CREATE TABLE mesh_sync_state (
        remote         TEXT NOT NULL,
        feed           TEXT NOT NULL,
        remote_replica TEXT,
        pulled         BIGINT NOT NULL,
        pushed         BIGINT NOT NULL,
        PRIMARY KEY (remote, feed)
    );
    CREATE TABLE mesh_users (
        id         TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE mesh_devices (
        id         TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES mesh_users (id),
        name       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE mesh_tokens (
        hash       TEXT PRIMARY KEY,
        device_id  TEXT NOT NULL REFERENCES mesh_devices (id),
        created_at BIGINT NOT NULL
    );
    CREATE INDEX mesh_tokens_by_device ON mesh_tokens (device_id);
    CREATE TABLE mesh_certificates (
        device_id  TEXT PRIMARY KEY REFERENCES mesh_devices (id),
        body       TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE mesh_hub_keys (
        name TEXT PRIMARY KEY,
        seed TEXT NOT NULL
    );
    CREATE TABLE mesh_accounts_version (
        one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        version BIGINT NOT NULL
    );
    INSERT INTO mesh_accounts_version (version) VALUES (0);
    CREATE TABLE mesh_objects (
        hash BYTEA PRIMARY KEY,
        size BIGINT NOT NULL,
        data BYTEA NOT NULL
    );
    CREATE TABLE mesh_object_refs (
        folder TEXT NOT NULL,
        hash   BYTEA NOT NULL REFERENCES mesh_objects (hash),
        PRIMARY KEY (folder, hash)
    );
    ",
    // 2: removed users, who enrolled a device and when it was last seen, enrollment codes,
    // revocation requests awaiting a second device.
    "
    ALTER TABLE mesh_users ADD COLUMN removed_at BIGINT;
    ALTER TABLE mesh_devices ADD COLUMN enrolled_by TEXT;
    ALTER TABLE mesh_devices ADD COLUMN last_seen BIGINT;
    CREATE TABLE mesh_enrollment_codes (
        hash       TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES mesh_users (id),
        minted_by  TEXT NOT NULL REFERENCES mesh_devices (id),
        expires_at BIGINT NOT NULL,
        used_at    BIGINT
    );
    CREATE TABLE mesh_revocation_requests (
        target       TEXT NOT NULL REFERENCES mesh_devices (id),
        requested_by TEXT NOT NULL REFERENCES mesh_devices (id),
        at           BIGINT NOT NULL,
        PRIMARY KEY (target, requested_by)
    );
    ",
    // 3: the hub processes serving the database, by heartbeat (they share rate limits).
    "
    CREATE TABLE mesh_processes (
        id      TEXT PRIMARY KEY,
        seen_at BIGINT NOT NULL
    );
    ",
    // 4: the replica's epochs (a restored dump must not let devices keep cursors of a change
    // log it lacks): one per run of the processes serving it, ended when the last one stops.
    "
    CREATE TABLE mesh_epochs (
        n         BIGSERIAL PRIMARY KEY,
        id        TEXT NOT NULL UNIQUE,
        start_seq BIGINT NOT NULL,
        end_seq   BIGINT
    );
    ",
    // 5: positions counted per feed. Entries keep their positions (replica-wide numbers
    // already increase within each feed) under the name `pos`; a feed records the replica-wide
    // number of its latest change beside its head.
    "
    ALTER TABLE mesh_entries RENAME COLUMN seq TO pos;
    ALTER INDEX mesh_entries_log RENAME TO mesh_entries_pos;
    ALTER TABLE mesh_feeds ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
    UPDATE mesh_feeds SET seq = head;
    ",
    // 6: each folder's claimed bytes, kept by the statements that claim objects and dropped
    // with the folder's claims (the stored-bytes quota reads these instead of summing every
    // object a user's folders claim on each upload).
    "
    CREATE TABLE mesh_folder_bytes (
        folder TEXT PRIMARY KEY,
        bytes  BIGINT NOT NULL
    );
    INSERT INTO mesh_folder_bytes (folder, bytes)
        SELECT r.folder, sum(o.size) FROM mesh_object_refs r JOIN mesh_objects o USING (hash)
        GROUP BY r.folder;
    ",
    // 7: the folders each user has a member record in (`Store::member_folders`), kept as
    // entries are written to `members` feeds and dropped with a purged feed; and the feeds'
    // keys in byte order, which a scope's feeds are a range of whatever the database's
    // collation.
    "
    CREATE TABLE mesh_members (
        member  TEXT NOT NULL,
        feed_id BIGINT NOT NULL REFERENCES mesh_feeds (feed_id),
        PRIMARY KEY (member, feed_id)
    );
    INSERT INTO mesh_members (member, feed_id)
        SELECT e.id, e.feed_id FROM mesh_entries e JOIN mesh_feeds f USING (feed_id)
        WHERE f.key LIKE 'folder:%/members';
    CREATE INDEX mesh_feeds_by_key_bytes ON mesh_feeds (key COLLATE \"C\");
    ",
];

/// The advisory lock key migrations run under (any constant that no other lock uses).
const MIGRATION_LOCK: i64 = 0x6d65_7368_6d69_6772; // "meshmigr"

/// The schema version of the database (0 when it was never migrated).
pub(crate) async fn version(client: &Client) -> Result<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass('mesh_migrations') IS NOT NULL", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one("SELECT max(version) FROM mesh_migrations", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    Ok(i64::from(v.unwrap_or(0)))
}

/// Applies every missing migration, each in its own transaction, under an advisory lock.
/// Returns how many were applied.
pub(crate) async fn migrate(client: &mut Client) -> Result<usize> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting a migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg("waiting for the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mesh_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg("creating the migrations table"))?;
    let current: Option<i32> = tx
        .query_one("SELECT max(version) FROM mesh_migrations", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    let current = i64::from(current.unwrap_or(0));
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            supported: known,
        });
    }
    let mut applied = 0;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(step)
            .await
            .map_err(pg("applying a migration"))?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("INSERT INTO mesh_migrations (version) VALUES ($1)", &[&v])
            .await
            .map_err(pg("recording a migration"))?;
        applied += 1;
    }
    tx.commit().await.map_err(pg("committing migrations"))?;
    Ok(applied)
}

/// Maps a PostgreSQL error with what the store was doing.
pub(crate) fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres {
        context: format!("postgres: {context}"),
        source,
    }
}
