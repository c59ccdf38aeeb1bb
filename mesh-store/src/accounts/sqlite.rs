//! Accounts in SQLite.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use mesh_core::id::{DeviceId, UserId};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{AccountStore, AddDevice, DeviceRow};
use crate::error::{Result, StoreError};
use crate::sqlite::Durability;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_device ON tokens(device_id);
CREATE TABLE IF NOT EXISTS certificates (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hub_keys (
    name TEXT PRIMARY KEY,
    seed TEXT NOT NULL
);
";

/// Accounts in a SQLite file (a hub's `accounts.db`) or in memory.
pub struct SqliteAccounts {
    conn: Mutex<Connection>,
    location: String,
}

impl std::fmt::Debug for SqliteAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAccounts")
            .field("location", &self.location)
            .finish()
    }
}

impl SqliteAccounts {
    /// Opens (creating if needed) the accounts file at `path`. `Full` durability syncs every
    /// change (a revocation survives a power loss); `Normal` only survives a crash of the hub.
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
        let location = path.display().to_string();
        let err = |e| StoreError::sqlite(location.clone(), e);
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        Self::init(conn, location)
    }

    /// Accounts in memory (tests, throwaway hubs).
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|e| StoreError::sqlite(":memory:", e))?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, location: String) -> Result<Self> {
        conn.execute_batch(SCHEMA)
            .map_err(|e| StoreError::sqlite(location.clone(), e))?;
        Ok(SqliteAccounts {
            conn: Mutex::new(conn),
            location,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| StoreError::sqlite(format!("accounts {}", self.location), e))
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| StoreError::Corrupt {
        path: "accounts".into(),
        reason: format!("unusable {what} {s:?}: {e}"),
    })
}

type RawDevice = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
);

fn raw_device(r: &Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn device_row(raw: RawDevice) -> Result<DeviceRow> {
    let (id, owner, name, kind, created_at, revoked_at, certificate) = raw;
    Ok(DeviceRow {
        id: parse(&id, "device id")?,
        owner: parse(&owner, "user id")?,
        name,
        kind,
        created_at,
        revoked_at,
        certificate,
    })
}

const DEVICE_COLUMNS: &str =
    "SELECT d.id, d.user_id, d.name, d.kind, d.created_at, d.revoked_at, c.body
     FROM devices d LEFT JOIN certificates c ON c.device_id = d.id";

impl AccountStore for SqliteAccounts {
    fn add_user(&self, user: &UserId, at: i64) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO users (id, created_at) VALUES (?1, ?2)",
                params![user.as_str(), at],
            )
        })
        .map(|n| n > 0)
    }

    fn has_user(&self, user: &UserId) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM users WHERE id = ?1", [user.as_str()], |_| {
                Ok(())
            })
            .optional()
        })
        .map(|r| r.is_some())
    }

    fn users(&self) -> Result<Vec<UserId>> {
        let ids = self.with(|c| {
            let mut st = c.prepare("SELECT id FROM users ORDER BY id")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        ids.iter().map(|s| parse(s, "user id")).collect()
    }

    fn add_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
        kind: &str,
        at: i64,
        token_hash: &str,
    ) -> Result<AddDevice> {
        self.with(|c| {
            let tx = c.transaction()?;
            let exists = tx
                .query_row("SELECT 1 FROM users WHERE id = ?1", [user.as_str()], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !exists {
                return Ok(AddDevice::NoSuchUser);
            }
            let n = tx.execute(
                "INSERT OR IGNORE INTO devices (id, user_id, name, kind, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![device.as_str(), user.as_str(), name, kind, at],
            )?;
            if n == 0 {
                return Ok(AddDevice::Exists);
            }
            tx.execute(
                "INSERT INTO tokens (hash, device_id, created_at) VALUES (?1, ?2, ?3)",
                params![token_hash, device.as_str(), at],
            )?;
            tx.commit()?;
            Ok(AddDevice::Added)
        })
    }

    fn add_token(&self, device: &DeviceId, token_hash: &str, at: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO tokens (hash, device_id, created_at)
                 SELECT ?1, id, ?3 FROM devices WHERE id = ?2 AND revoked_at IS NULL",
                params![token_hash, device.as_str(), at],
            )?;
            Ok(n > 0)
        })
    }

    fn revoke_device(&self, device: &DeviceId, at: i64) -> Result<Option<UserId>> {
        let owner = self.with(|c| {
            let tx = c.transaction()?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT user_id FROM devices WHERE id = ?1 AND revoked_at IS NULL",
                    [device.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if owner.is_some() {
                tx.execute(
                    "UPDATE devices SET revoked_at = ?2 WHERE id = ?1",
                    params![device.as_str(), at],
                )?;
                tx.execute("DELETE FROM tokens WHERE device_id = ?1", [device.as_str()])?;
                tx.commit()?;
            }
            Ok(owner)
        })?;
        owner.map(|o| parse(&o, "user id")).transpose()
    }

    fn principal(&self, token_hash: &str) -> Result<Option<(UserId, DeviceId)>> {
        let row: Option<(String, String)> = self.with(|c| {
            c.prepare_cached(
                "SELECT d.user_id, d.id FROM tokens t JOIN devices d ON d.id = t.device_id
                 WHERE t.hash = ?1 AND d.revoked_at IS NULL",
            )?
            .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        })?;
        row.map(|(u, d)| Ok((parse(&u, "user id")?, parse(&d, "device id")?)))
            .transpose()
    }

    fn is_live(&self, user: &UserId, device: &DeviceId) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM devices WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                [device.as_str(), user.as_str()],
                |_| Ok(()),
            )
            .optional()
        })
        .map(|r| r.is_some())
    }

    fn devices(&self, user: &UserId) -> Result<Vec<DeviceRow>> {
        let raws = self.with(|c| {
            let mut st = c.prepare(&format!(
                "{DEVICE_COLUMNS} WHERE d.user_id = ?1 AND d.revoked_at IS NULL ORDER BY d.id"
            ))?;
            let rows = st.query_map([user.as_str()], raw_device)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raws.into_iter().map(device_row).collect()
    }

    fn all_devices(&self) -> Result<Vec<DeviceRow>> {
        let raws = self.with(|c| {
            let mut st = c.prepare(&format!("{DEVICE_COLUMNS} ORDER BY d.id"))?;
            let rows = st.query_map([], raw_device)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raws.into_iter().map(device_row).collect()
    }

    fn set_certificate(&self, device: &DeviceId, body: &str, at: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO certificates (device_id, body, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device_id) DO UPDATE SET body = excluded.body,
                    created_at = excluded.created_at",
                params![device.as_str(), body, at],
            )
        })
        .map(|_| ())
    }

    fn key(&self, name: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT seed FROM hub_keys WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    fn init_key(&self, name: &str, value: &str) -> Result<String> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO hub_keys (name, seed) VALUES (?1, ?2)",
                [name, value],
            )?;
            c.query_row("SELECT seed FROM hub_keys WHERE name = ?1", [name], |r| {
                r.get(0)
            })
        })
    }

    fn version(&self) -> Result<i64> {
        self.with(|c| c.query_row("PRAGMA data_version", [], |r| r.get(0)))
    }
}
