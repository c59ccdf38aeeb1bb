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

/// Schema changes after the first: step `n` takes `user_version` from `n` to `n + 1`.
const MIGRATIONS: &[&str] = &["
    ALTER TABLE users ADD COLUMN removed_at INTEGER;
    ALTER TABLE devices ADD COLUMN enrolled_by TEXT;
    ALTER TABLE devices ADD COLUMN last_seen INTEGER;
    CREATE TABLE enrollment_codes (
        hash       TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id),
        minted_by  TEXT NOT NULL REFERENCES devices(id),
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE TABLE revocation_requests (
        target       TEXT NOT NULL REFERENCES devices(id),
        requested_by TEXT NOT NULL REFERENCES devices(id),
        at           INTEGER NOT NULL,
        PRIMARY KEY (target, requested_by)
    );
"];

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

    fn init(mut conn: Connection, location: String) -> Result<Self> {
        let err = |e| StoreError::sqlite(location.clone(), e);
        crate::sqlite::tune(&conn).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                supported: known,
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(step).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
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

struct RawDevice {
    id: String,
    owner: String,
    name: String,
    kind: String,
    created_at: i64,
    revoked_at: Option<i64>,
    certificate: Option<String>,
    enrolled_by: Option<String>,
    last_seen: Option<i64>,
}

fn raw_device(r: &Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok(RawDevice {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        kind: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
        certificate: r.get(6)?,
        enrolled_by: r.get(7)?,
        last_seen: r.get(8)?,
    })
}

fn device_row(raw: RawDevice) -> Result<DeviceRow> {
    Ok(DeviceRow {
        id: parse(&raw.id, "device id")?,
        owner: parse(&raw.owner, "user id")?,
        name: raw.name,
        kind: raw.kind,
        created_at: raw.created_at,
        revoked_at: raw.revoked_at,
        certificate: raw.certificate,
        enrolled_by: raw
            .enrolled_by
            .map(|d| parse(&d, "device id"))
            .transpose()?,
        last_seen: raw.last_seen,
    })
}

const DEVICE_COLUMNS: &str =
    "SELECT d.id, d.user_id, d.name, d.kind, d.created_at, d.revoked_at, c.body,
        d.enrolled_by, d.last_seen
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
            c.query_row(
                "SELECT 1 FROM users WHERE id = ?1 AND removed_at IS NULL",
                [user.as_str()],
                |_| Ok(()),
            )
            .optional()
        })
        .map(|r| r.is_some())
    }

    fn users(&self) -> Result<Vec<UserId>> {
        let ids = self.with(|c| {
            let mut st = c.prepare("SELECT id FROM users WHERE removed_at IS NULL ORDER BY id")?;
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
        enrolled_by: Option<&DeviceId>,
    ) -> Result<AddDevice> {
        self.with(|c| {
            let tx = c.transaction()?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM users WHERE id = ?1 AND removed_at IS NULL",
                    [user.as_str()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Ok(AddDevice::NoSuchUser);
            }
            let n = tx.execute(
                "INSERT OR IGNORE INTO devices (id, user_id, name, kind, created_at, enrolled_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    device.as_str(),
                    user.as_str(),
                    name,
                    kind,
                    at,
                    enrolled_by.map(DeviceId::as_str)
                ],
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

    fn add_code(
        &self,
        user: &UserId,
        minted_by: &DeviceId,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO enrollment_codes (hash, user_id, minted_by, expires_at)
                 SELECT ?1, user_id, id, ?4 FROM devices
                 WHERE id = ?3 AND user_id = ?2 AND revoked_at IS NULL",
                params![code_hash, user.as_str(), minted_by.as_str(), expires_at],
            )?;
            Ok(n > 0)
        })
    }

    fn redeem_code(&self, code_hash: &str, now: i64) -> Result<Option<(UserId, DeviceId)>> {
        let row: Option<(String, String)> = self.with(|c| {
            let tx = c.transaction()?;
            let row = tx
                .query_row(
                    "SELECT e.user_id, e.minted_by FROM enrollment_codes e
                     JOIN devices d ON d.id = e.minted_by
                     JOIN users u ON u.id = e.user_id
                     WHERE e.hash = ?1 AND e.used_at IS NULL AND e.expires_at > ?2
                       AND d.revoked_at IS NULL AND u.removed_at IS NULL",
                    params![code_hash, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            // Used once, whether or not it still worked.
            tx.execute(
                "UPDATE enrollment_codes SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                params![code_hash, now],
            )?;
            tx.commit()?;
            Ok(row)
        })?;
        row.map(|(u, d)| Ok((parse(&u, "user id")?, parse(&d, "device id")?)))
            .transpose()
    }

    fn confirm_device(&self, device: &DeviceId) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET enrolled_by = NULL
                 WHERE id = ?1 AND revoked_at IS NULL AND enrolled_by IS NOT NULL",
                [device.as_str()],
            )
        })
        .map(|n| n > 0)
    }

    fn request_revocation(
        &self,
        target: &DeviceId,
        by: &DeviceId,
        at: i64,
    ) -> Result<Vec<DeviceId>> {
        let others: Vec<String> = self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO revocation_requests (target, requested_by, at)
                 VALUES (?1, ?2, ?3)",
                params![target.as_str(), by.as_str(), at],
            )?;
            let others = {
                let mut st = tx.prepare(
                    "SELECT r.requested_by FROM revocation_requests r
                     JOIN devices d ON d.id = r.requested_by
                     WHERE r.target = ?1 AND r.requested_by <> ?2 AND d.revoked_at IS NULL
                     ORDER BY r.requested_by",
                )?;
                let rows = st.query_map([target.as_str(), by.as_str()], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()?
            };
            tx.commit()?;
            Ok(others)
        })?;
        others.iter().map(|d| parse(d, "device id")).collect()
    }

    fn remove_user(&self, user: &UserId, at: i64) -> Result<Option<Vec<DeviceId>>> {
        let live: Option<Vec<String>> = self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE users SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL",
                params![user.as_str(), at],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let live = {
                let mut st = tx.prepare(
                    "SELECT id FROM devices WHERE user_id = ?1 AND revoked_at IS NULL ORDER BY id",
                )?;
                let rows = st.query_map([user.as_str()], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()?
            };
            tx.execute(
                "UPDATE devices SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                params![user.as_str(), at],
            )?;
            tx.execute(
                "DELETE FROM tokens WHERE device_id IN (SELECT id FROM devices WHERE user_id = ?1)",
                [user.as_str()],
            )?;
            tx.commit()?;
            Ok(Some(live))
        })?;
        live.map(|ids| ids.iter().map(|d| parse(d, "device id")).collect())
            .transpose()
    }

    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE devices SET last_seen = ?2
                     WHERE id = ?1 AND (last_seen IS NULL OR last_seen < ?2)",
                )?;
                for (d, at) in seen {
                    st.execute(params![d.as_str(), at])?;
                }
            }
            tx.commit()
        })
    }
}
