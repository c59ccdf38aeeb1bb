//! The connection pool of one database (and schema), and the replica it holds.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use mesh_core::id::ReplicaId;
use std::future::Future;
use tokio_postgres::NoTls;

use super::migrations::{self, pg, MIGRATIONS};
use super::replica::PgStore;
use crate::error::{Result, StoreError};

/// Where a PostgreSQL store lives and how many connections it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgConfig {
    /// A libpq-style URL (`postgres://user:password@host:port/database`) or key=value string.
    pub url: String,
    /// The schema the tables live in (`public` when `None`). Lets one database hold several
    /// independent hubs, or a test's tables.
    pub schema: Option<String>,
    /// The most connections this process opens (to the pool; the notification listener has
    /// one more of its own).
    pub max_connections: usize,
    /// How long a request waits for a free connection or a new one before failing.
    pub timeout: Duration,
}

impl PgConfig {
    /// A configuration for `url` with the defaults: schema `public`, 16 connections, 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            schema: None,
            max_connections: 16,
            timeout: Duration::from_secs(10),
        }
    }

    /// Keeps the tables in `schema` (created by [`PgDatabase::migrate`]).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections this process opens.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The parsed connection settings, with the schema as the search path.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config> {
        let mut cfg = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        if let Some(schema) = &self.schema {
            check_schema_name(schema)?;
            cfg.options(format!("-c search_path={schema}"));
        }
        cfg.connect_timeout(self.timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("mesh");
        }
        Ok(cfg)
    }
}

/// A schema name: lower-case letters, digits and `_`, not starting with a digit, at most 40
/// bytes (it is spliced into SQL and into notification channel names, which PostgreSQL
/// limits to 63 bytes, so nothing else is accepted).
fn check_schema_name(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "invalid schema name {s:?}: use lower-case letters, digits and '_'"
        )))
    }
}

/// A pool of connections to one PostgreSQL database (and schema). Cheap to clone.
///
/// The connections live on a small runtime of the database's own (one I/O thread,
/// `mesh-postgres`), so every method may be called from any thread, async or not: it blocks
/// the calling thread until the database answers (async code should call it from
/// `spawn_blocking`, as the hub does, to keep its workers free).
#[derive(Clone)]
pub struct PgDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: PgConfig,
    pg: tokio_postgres::Config,
    runtime: IoRuntime,
    replica: OnceLock<ReplicaId>,
}

/// The I/O runtime, shut down without waiting when the last handle goes (dropping a runtime
/// that waits would panic on an async thread).
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("schema", &self.inner.config.schema)
            .field("replica", &self.inner.replica.get())
            .finish()
    }
}

impl PgDatabase {
    /// Connects (one connection is opened to check the server is there).
    pub fn connect(config: PgConfig) -> Result<PgDatabase> {
        let pg = config.pg_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mesh-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres: no I/O thread: {e}")))?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("PostgreSQL pool: {e}")))?;
        let db = PgDatabase {
            inner: Arc::new(Inner {
                pool,
                config,
                pg,
                runtime: IoRuntime(Some(runtime)),
                replica: OnceLock::new(),
            }),
        };
        drop(db.connection()?);
        Ok(db)
    }

    /// Runs `f` on the I/O runtime and waits for it on this thread.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let rt = self.inner.runtime.0.as_ref().ok_or_else(closed)?;
        futures::executor::block_on(rt.spawn(f))
            .map_err(|e| StoreError::Backend(format!("postgres: task failed: {e}")))?
    }

    /// A pooled connection (waiting at most the configured timeout for one).
    pub(crate) fn connection(&self) -> Result<Object> {
        let pool = self.inner.pool.clone();
        self.run(async move {
            pool.get()
                .await
                .map_err(|e| StoreError::Backend(format!("postgres: no connection: {e}")))
        })
    }

    /// The name of a notification channel for this database's schema: `base` itself in the
    /// default schema, `base_<schema>` in another (notifications are database-wide, so hubs
    /// in different schemas of one database must not hear each other).
    pub fn channel(&self, base: &str) -> String {
        match &self.inner.config.schema {
            None => base.to_owned(),
            Some(schema) => format!("{base}_{schema}"),
        }
    }

    /// Whether `other` is this handle or a clone of it (the same pool, schema and database).
    pub(crate) fn same(&self, other: &PgDatabase) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The connection settings (for the listener's own connection).
    pub(crate) fn pg_config(&self) -> &tokio_postgres::Config {
        &self.inner.pg
    }

    /// Creates the schema if needed and applies every missing migration; returns how many were
    /// applied. Safe to run from several processes at once (they take turns).
    pub fn migrate(&self) -> Result<usize> {
        let mut conn = self.connection()?;
        if let Some(schema) = &self.inner.config.schema {
            check_schema_name(schema)?;
            block(conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                .map_err(pg("creating the schema"))?;
        }
        block(migrations::migrate(&mut conn))
    }

    /// The schema version of the database and the newest this build knows.
    pub fn version(&self) -> Result<(i64, i64)> {
        let conn = self.connection()?;
        Ok((block(migrations::version(&conn))?, MIGRATIONS.len() as i64))
    }

    /// Checks that the database is migrated to exactly this build's version: an older one
    /// needs `migrate` first ([`StoreError::Config`]), a newer one is refused
    /// ([`StoreError::TooNew`]).
    pub fn check_version(&self) -> Result<()> {
        let (found, supported) = self.version()?;
        if found > supported {
            return Err(StoreError::TooNew { found, supported });
        }
        if found < supported {
            return Err(StoreError::Config(format!(
                "the database is at schema version {found}, this build needs {supported}: \
                 run `mesh-hub migrate` (or start with --migrate)"
            )));
        }
        Ok(())
    }

    /// The id of the replica the database holds, recording `fresh` if it holds none yet.
    /// Every process serving the database gets the same id.
    pub fn open_replica(&self, fresh: ReplicaId) -> Result<ReplicaId> {
        self.check_version()?;
        let conn = self.connection()?;
        block(conn.execute(
            "INSERT INTO mesh_replica (id) VALUES ($1) ON CONFLICT (one) DO NOTHING",
            &[&fresh.as_str()],
        ))
        .map_err(pg("recording the replica id"))?;
        let id: String = block(conn.query_one("SELECT id FROM mesh_replica", &[]))
            .map_err(pg("reading the replica id"))?
            .get(0);
        let id = ReplicaId::new(&id).map_err(|e| StoreError::Corrupt {
            path: "postgres: mesh_replica".into(),
            reason: format!("unusable replica id {id:?}: {e}"),
        })?;
        let _ = self.inner.replica.set(id.clone());
        Ok(id)
    }

    /// Joins the replica's current epoch if another process serving it was seen within the
    /// last `window` seconds and the epoch has not ended; otherwise begins epoch `fresh` at
    /// the replica's newest change. Records `process` as alive at `now` (seconds) so that
    /// processes starting together agree. Returns the epoch's id and the ids of the earlier
    /// epochs that ended cleanly, newest first (at most `keep`).
    pub fn begin_epoch(
        &self,
        process: &str,
        fresh: &str,
        now: i64,
        window: i64,
        keep: usize,
    ) -> Result<(String, Vec<String>)> {
        let mut c = self.connection()?;
        block(async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EPOCH_LOCK])
                .await?;
            tx.execute(
                "INSERT INTO mesh_processes (id, seen_at) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                &[&process, &now],
            )
            .await?;
            let others: i64 = tx
                .query_one(
                    "SELECT count(*) FROM mesh_processes WHERE seen_at >= $1 AND id <> $2",
                    &[&(now - window), &process],
                )
                .await?
                .get(0);
            let current = tx
                .query_opt(
                    "SELECT id FROM mesh_epochs WHERE end_seq IS NULL
                     AND n = (SELECT max(n) FROM mesh_epochs)",
                    &[],
                )
                .await?
                .map(|r| r.get::<_, String>(0));
            let id = match current {
                Some(id) if others > 0 => id,
                _ => {
                    tx.execute(
                        "INSERT INTO mesh_epochs (id, start_seq)
                         SELECT $1, last_seq FROM mesh_replica",
                        &[&fresh],
                    )
                    .await?;
                    fresh.to_owned()
                }
            };
            let continues = tx
                .query(
                    "SELECT id FROM mesh_epochs WHERE end_seq IS NOT NULL AND id <> $1
                     ORDER BY n DESC LIMIT $2",
                    &[&id, &i64::try_from(keep).unwrap_or(i64::MAX)],
                )
                .await?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>((id, continues))
        })
        .map_err(pg("beginning an epoch"))
    }

    /// Process `process` stops serving: it is forgotten, and when no other process was seen
    /// within the last `window` seconds, `epoch` ends cleanly at the replica's newest change.
    /// Returns whether it ended.
    pub fn end_epoch(&self, process: &str, epoch: &str, now: i64, window: i64) -> Result<bool> {
        let mut c = self.connection()?;
        block(async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EPOCH_LOCK])
                .await?;
            tx.execute("DELETE FROM mesh_processes WHERE id = $1", &[&process])
                .await?;
            let others: i64 = tx
                .query_one(
                    "SELECT count(*) FROM mesh_processes WHERE seen_at >= $1",
                    &[&(now - window)],
                )
                .await?
                .get(0);
            let ended = if others == 0 {
                tx.execute(
                    "UPDATE mesh_epochs SET end_seq = (SELECT last_seq FROM mesh_replica)
                     WHERE id = $1 AND end_seq IS NULL",
                    &[&epoch],
                )
                .await?
                    > 0
            } else {
                false
            };
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(ended)
        })
        .map_err(pg("ending an epoch"))
    }

    /// Records that process `id` is alive at `now` (seconds) and answers how many processes
    /// were seen within the last `window` seconds, this one included; rows older than four
    /// windows are removed.
    pub fn heartbeat(&self, id: &str, now: i64, window: i64) -> Result<u32> {
        let conn = self.connection()?;
        block(conn.execute(
            "INSERT INTO mesh_processes (id, seen_at) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            &[&id, &now],
        ))
        .map_err(pg("recording a heartbeat"))?;
        block(conn.execute(
            "DELETE FROM mesh_processes WHERE seen_at < $1",
            &[&(now - 4 * window)],
        ))
        .map_err(pg("forgetting old processes"))?;
        let n: i64 = block(conn.query_one(
            "SELECT count(*) FROM mesh_processes WHERE seen_at >= $1",
            &[&(now - window)],
        ))
        .map_err(pg("counting processes"))?
        .get(0);
        Ok(u32::try_from(n.max(1)).unwrap_or(u32::MAX))
    }

    /// A store over one pooled connection, held until the store is dropped. Needs
    /// [`open_replica`] first.
    ///
    /// [`open_replica`]: Self::open_replica
    pub fn store(&self) -> Result<PgStore> {
        let replica = self
            .inner
            .replica
            .get()
            .cloned()
            .ok_or_else(|| StoreError::Config("open_replica was not called".into()))?;
        Ok(PgStore::new(
            self.clone(),
            self.connection()?,
            replica,
            self.channel(super::CHANGES_CHANNEL),
        ))
    }
}

fn closed() -> StoreError {
    StoreError::Backend("postgres: the database handle is shut down".into())
}

/// Waits for a query on a connection: the connection is driven by the I/O runtime, so the
/// future needs no runtime of its own and any thread may wait for it.
/// The advisory lock key under which epochs begin and end (any constant no other lock uses).
const EPOCH_LOCK: i64 = 0x6d65_7368_6570_6f63; // "meshepoc"

pub(crate) fn block<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}
