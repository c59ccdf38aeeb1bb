//! Accounts on PostgreSQL: the same records as the SQLite accounts, shared by every hub
//! process; `mesh_accounts_version` counts device changes so that each process's keyring
//! cache knows when to read them again.

use mesh_core::id::{DeviceId, UserId};
use tokio_postgres::Row;

use super::database::{block, PgDatabase};
use super::migrations::pg;
use crate::accounts::{AccountStore, AddDevice, DeviceRow};
use crate::error::{Result, StoreError};

/// Accounts in a PostgreSQL database (see [`AccountStore`]).
#[derive(Debug, Clone)]
pub struct PgAccounts {
    db: PgDatabase,
}

impl PgAccounts {
    /// The accounts of a migrated database.
    pub fn new(db: PgDatabase) -> Self {
        PgAccounts { db }
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| StoreError::Corrupt {
        path: "postgres: accounts".into(),
        reason: format!("unusable {what} {s:?}: {e}"),
    })
}

fn device_row(r: &Row) -> Result<DeviceRow> {
    Ok(DeviceRow {
        id: parse(r.get(0), "device id")?,
        owner: parse(r.get(1), "user id")?,
        name: r.get(2),
        kind: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
        certificate: r.get(6),
        enrolled_by: r
            .get::<_, Option<&str>>(7)
            .map(|d| parse(d, "device id"))
            .transpose()?,
        last_seen: r.get(8),
    })
}

const DEVICE_COLUMNS: &str =
    "SELECT d.id, d.user_id, d.name, d.kind, d.created_at, d.revoked_at, c.body,
        d.enrolled_by, d.last_seen
     FROM mesh_devices d LEFT JOIN mesh_certificates c ON c.device_id = d.id";

const BUMP: &str = "UPDATE mesh_accounts_version SET version = version + 1";

impl AccountStore for PgAccounts {
    fn add_user(&self, user: &UserId, at: i64) -> Result<bool> {
        let mut c = self.db.connection()?;
        let n = block(async {
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "INSERT INTO mesh_users (id, created_at) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&user.as_str(), &at],
                )
                .await?;
            // Users are in every process's keyring too (invitations need an account).
            if n > 0 {
                tx.execute(BUMP, &[]).await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(n)
        })
        .map_err(pg("adding a user"))?;
        Ok(n > 0)
    }

    fn has_user(&self, user: &UserId) -> Result<bool> {
        let c = self.db.connection()?;
        Ok(block(c.query_opt(
            "SELECT 1 FROM mesh_users WHERE id = $1 AND removed_at IS NULL",
            &[&user.as_str()],
        ))
        .map_err(pg("reading a user"))?
        .is_some())
    }

    fn users(&self) -> Result<Vec<UserId>> {
        let c = self.db.connection()?;
        let rows = block(c.query(
            "SELECT id FROM mesh_users WHERE removed_at IS NULL ORDER BY id COLLATE \"C\"",
            &[],
        ))
        .map_err(pg("listing users"))?;
        rows.iter().map(|r| parse(r.get(0), "user id")).collect()
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
        let mut c = self.db.connection()?;
        let enroller = enrolled_by.map(DeviceId::as_str);
        block(async {
            let tx = c.transaction().await?;
            if tx
                .query_opt(
                    "SELECT 1 FROM mesh_users WHERE id = $1 AND removed_at IS NULL",
                    &[&user.as_str()],
                )
                .await?
                .is_none()
            {
                return Ok(AddDevice::NoSuchUser);
            }
            let n = tx
                .execute(
                    "INSERT INTO mesh_devices (id, user_id, name, kind, created_at, enrolled_by)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[
                        &device.as_str(),
                        &user.as_str(),
                        &name,
                        &kind,
                        &at,
                        &enroller,
                    ],
                )
                .await?;
            if n == 0 {
                return Ok(AddDevice::Exists);
            }
            tx.execute(
                "INSERT INTO mesh_tokens (hash, device_id, created_at) VALUES ($1, $2, $3)",
                &[&token_hash, &device.as_str(), &at],
            )
            .await?;
            tx.execute(BUMP, &[]).await?;
            tx.commit().await?;
            Ok(AddDevice::Added)
        })
        .map_err(pg("adding a device"))
    }

    fn add_token(&self, device: &DeviceId, token_hash: &str, at: i64) -> Result<bool> {
        let c = self.db.connection()?;
        let n = block(c.execute(
            "INSERT INTO mesh_tokens (hash, device_id, created_at)
             SELECT $1, id, $3 FROM mesh_devices WHERE id = $2 AND revoked_at IS NULL",
            &[&token_hash, &device.as_str(), &at],
        ))
        .map_err(pg("adding a token"))?;
        Ok(n > 0)
    }

    fn revoke_device(&self, device: &DeviceId, at: i64) -> Result<Option<UserId>> {
        let mut c = self.db.connection()?;
        let owner: Option<String> = block(async {
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "UPDATE mesh_devices SET revoked_at = $2
                     WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
                    &[&device.as_str(), &at],
                )
                .await?;
            if row.is_some() {
                tx.execute(
                    "DELETE FROM mesh_tokens WHERE device_id = $1",
                    &[&device.as_str()],
                )
                .await?;
                tx.execute(BUMP, &[]).await?;
                // Every process closes the device's open streams.
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&self.db.channel(super::REVOKED_CHANNEL), &device.as_str()],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(row.map(|r| r.get(0)))
        })
        .map_err(pg("revoking a device"))?;
        owner.map(|o| parse(&o, "user id")).transpose()
    }

    fn principal(&self, token_hash: &str) -> Result<Option<(UserId, DeviceId)>> {
        let c = self.db.connection()?;
        let row = block(c.query_opt(
            "SELECT d.user_id, d.id FROM mesh_tokens t JOIN mesh_devices d ON d.id = t.device_id
             WHERE t.hash = $1 AND d.revoked_at IS NULL",
            &[&token_hash],
        ))
        .map_err(pg("authenticating"))?;
        row.map(|r| Ok((parse(r.get(0), "user id")?, parse(r.get(1), "device id")?)))
            .transpose()
    }

    fn is_live(&self, user: &UserId, device: &DeviceId) -> Result<bool> {
        let c = self.db.connection()?;
        Ok(block(c.query_opt(
            "SELECT 1 FROM mesh_devices WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            &[&device.as_str(), &user.as_str()],
        ))
        .map_err(pg("reading a device"))?
        .is_some())
    }

    fn devices(&self, user: &UserId) -> Result<Vec<DeviceRow>> {
        let c = self.db.connection()?;
        let rows = block(c.query(
            &format!(
                "{DEVICE_COLUMNS} WHERE d.user_id = $1 AND d.revoked_at IS NULL
                 ORDER BY d.id COLLATE \"C\""
            ),
            &[&user.as_str()],
        ))
        .map_err(pg("listing devices"))?;
        rows.iter().map(device_row).collect()
    }

    fn all_devices(&self) -> Result<Vec<DeviceRow>> {
        let c = self.db.connection()?;
        let rows = block(c.query(
            &format!("{DEVICE_COLUMNS} ORDER BY d.id COLLATE \"C\""),
            &[],
        ))
        .map_err(pg("listing devices"))?;
        rows.iter().map(device_row).collect()
    }

    fn set_certificate(&self, device: &DeviceId, body: &str, at: i64) -> Result<()> {
        let mut c = self.db.connection()?;
        block(async {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO mesh_certificates (device_id, body, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (device_id) DO UPDATE SET body = excluded.body,
                    created_at = excluded.created_at",
                &[&device.as_str(), &body, &at],
            )
            .await?;
            tx.execute(BUMP, &[]).await?;
            tx.commit().await
        })
        .map_err(pg("recording a certificate"))
    }

    fn key(&self, name: &str) -> Result<Option<String>> {
        let c = self.db.connection()?;
        Ok(
            block(c.query_opt("SELECT seed FROM mesh_hub_keys WHERE name = $1", &[&name]))
                .map_err(pg("reading a key"))?
                .map(|r| r.get(0)),
        )
    }

    fn init_key(&self, name: &str, value: &str) -> Result<String> {
        let c = self.db.connection()?;
        block(c.execute(
            "INSERT INTO mesh_hub_keys (name, seed) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &value],
        ))
        .map_err(pg("storing a key"))?;
        Ok(
            block(c.query_one("SELECT seed FROM mesh_hub_keys WHERE name = $1", &[&name]))
                .map_err(pg("reading a key"))?
                .get(0),
        )
    }

    fn add_code(
        &self,
        user: &UserId,
        minted_by: &DeviceId,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let c = self.db.connection()?;
        let n = block(c.execute(
            "INSERT INTO mesh_enrollment_codes (hash, user_id, minted_by, expires_at)
             SELECT $1, user_id, id, $4 FROM mesh_devices
             WHERE id = $3 AND user_id = $2 AND revoked_at IS NULL",
            &[&code_hash, &user.as_str(), &minted_by.as_str(), &expires_at],
        ))
        .map_err(pg("minting an enrollment code"))?;
        Ok(n > 0)
    }

    fn redeem_code(&self, code_hash: &str, now: i64) -> Result<Option<(UserId, DeviceId)>> {
        let mut c = self.db.connection()?;
        let row: Option<(String, String)> = block(async {
            let tx = c.transaction().await?;
            // Used once, whether or not it still works; the row lock makes two redemptions
            // of one code take turns.
            let code = tx
                .query_opt(
                    "UPDATE mesh_enrollment_codes SET used_at = $2
                     WHERE hash = $1 AND used_at IS NULL
                     RETURNING user_id, minted_by, expires_at",
                    &[&code_hash, &now],
                )
                .await?;
            let mut out = None;
            if let Some(r) = code {
                let (user, minter, expires): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
                let live = tx
                    .query_opt(
                        "SELECT 1 FROM mesh_devices d JOIN mesh_users u ON u.id = d.user_id
                         WHERE d.id = $1 AND d.revoked_at IS NULL AND u.removed_at IS NULL",
                        &[&minter],
                    )
                    .await?
                    .is_some();
                if live && expires > now {
                    out = Some((user, minter));
                }
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(out)
        })
        .map_err(pg("using an enrollment code"))?;
        row.map(|(u, d)| Ok((parse(&u, "user id")?, parse(&d, "device id")?)))
            .transpose()
    }

    fn confirm_device(&self, device: &DeviceId) -> Result<bool> {
        let c = self.db.connection()?;
        let n = block(c.execute(
            "UPDATE mesh_devices SET enrolled_by = NULL
             WHERE id = $1 AND revoked_at IS NULL AND enrolled_by IS NOT NULL",
            &[&device.as_str()],
        ))
        .map_err(pg("confirming a device"))?;
        Ok(n > 0)
    }

    fn request_revocation(
        &self,
        target: &DeviceId,
        by: &DeviceId,
        at: i64,
    ) -> Result<Vec<DeviceId>> {
        let mut c = self.db.connection()?;
        let others: Vec<String> = block(async {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO mesh_revocation_requests (target, requested_by, at)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (target, requested_by) DO UPDATE SET at = excluded.at",
                &[&target.as_str(), &by.as_str(), &at],
            )
            .await?;
            let rows = tx
                .query(
                    "SELECT r.requested_by FROM mesh_revocation_requests r
                     JOIN mesh_devices d ON d.id = r.requested_by
                     WHERE r.target = $1 AND r.requested_by <> $2 AND d.revoked_at IS NULL
                     ORDER BY r.requested_by COLLATE \"C\"",
                    &[&target.as_str(), &by.as_str()],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(rows.iter().map(|r| r.get(0)).collect())
        })
        .map_err(pg("recording a revocation request"))?;
        others.iter().map(|d| parse(d, "device id")).collect()
    }

    fn remove_user(&self, user: &UserId, at: i64) -> Result<Option<Vec<DeviceId>>> {
        let mut c = self.db.connection()?;
        let revoked = self.db.channel(super::REVOKED_CHANNEL);
        let live: Option<Vec<String>> = block(async {
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE mesh_users SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL",
                    &[&user.as_str(), &at],
                )
                .await?;
            if n == 0 {
                return Ok(None);
            }
            let rows = tx
                .query(
                    "UPDATE mesh_devices SET revoked_at = $2
                     WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
                    &[&user.as_str(), &at],
                )
                .await?;
            let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            tx.execute(
                "DELETE FROM mesh_tokens WHERE device_id IN
                    (SELECT id FROM mesh_devices WHERE user_id = $1)",
                &[&user.as_str()],
            )
            .await?;
            tx.execute(BUMP, &[]).await?;
            for d in &ids {
                tx.execute("SELECT pg_notify($1, $2)", &[&revoked, d])
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(Some(ids))
        })
        .map_err(pg("removing a user"))?;
        live.map(|ids| ids.iter().map(|d| parse(d, "device id")).collect())
            .transpose()
    }

    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let c = self.db.connection()?;
        let ids: Vec<&str> = seen.iter().map(|(d, _)| d.as_str()).collect();
        let ats: Vec<i64> = seen.iter().map(|(_, at)| *at).collect();
        block(c.execute(
            "UPDATE mesh_devices d SET last_seen = v.at
             FROM unnest($1::text[], $2::bigint[]) AS v(id, at)
             WHERE d.id = v.id AND (d.last_seen IS NULL OR d.last_seen < v.at)",
            &[&ids, &ats],
        ))
        .map_err(pg("recording last seen"))?;
        Ok(())
    }

    fn version(&self) -> Result<i64> {
        let c = self.db.connection()?;
        Ok(
            block(c.query_one("SELECT version FROM mesh_accounts_version", &[]))
                .map_err(pg("reading the accounts version"))?
                .get(0),
        )
    }
}
