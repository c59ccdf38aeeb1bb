//! The account stores against the account suite; the version that tells a cache to reload.

use mesh_core::id::UserId;
use mesh_store::accounts::{suite, AccountStore, SqliteAccounts};
use mesh_store::Durability;

#[test]
fn the_account_suite_passes_in_memory() {
    suite::run_all(|| SqliteAccounts::in_memory().unwrap());
}

#[test]
fn the_account_suite_passes_on_sqlite_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    suite::run_all(|| {
        n += 1;
        SqliteAccounts::open(&dir.path().join(format!("a{n}.db")), Durability::Full).unwrap()
    });
}

/// Another handle's device change moves the version; a user added does not need to.
#[test]
fn another_handles_device_changes_move_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    let hub = SqliteAccounts::open(&path, Durability::Full).unwrap();
    let cli = SqliteAccounts::open(&path, Durability::Normal).unwrap();
    let v0 = hub.version().unwrap();
    let ann: UserId = "ann".parse().unwrap();
    cli.add_user(&ann, 1).unwrap();
    cli.add_device(&ann, &"phone".parse().unwrap(), "P", "phone", 1, "h", None)
        .unwrap();
    assert_ne!(hub.version().unwrap(), v0);
}

#[cfg(feature = "postgres")]
mod postgres {
    use mesh_store::accounts::{suite, AccountStore};
    use mesh_store::postgres::{PgAccounts, PgConfig, PgDatabase};

    fn accounts(url: &str) -> PgAccounts {
        let db = PgDatabase::connect(
            PgConfig::new(url)
                .schema(crate::postgres::fresh_schema())
                .max_connections(4),
        )
        .unwrap();
        db.migrate().unwrap();
        PgAccounts::new(db)
    }

    #[test]
    fn the_account_suite_passes_on_postgres() {
        let Some(url) = crate::postgres::server() else {
            return;
        };
        suite::run_all(|| accounts(&url));
    }

    #[test]
    fn device_changes_move_the_version_for_every_handle() {
        let Some(url) = crate::postgres::server() else {
            return;
        };
        let a = accounts(&url);
        let v0 = a.version().unwrap();
        a.add_user(&"ann".parse().unwrap(), 1).unwrap();
        let v0b = a.version().unwrap();
        assert!(v0b > v0, "users are in the keyring too");
        let v0 = v0b;
        a.add_device(
            &"ann".parse().unwrap(),
            &"p".parse().unwrap(),
            "P",
            "phone",
            1,
            "h",
            None,
        )
        .unwrap();
        let v1 = a.version().unwrap();
        assert!(v1 > v0);
        a.revoke_device(&"p".parse().unwrap(), 2).unwrap();
        assert!(a.version().unwrap() > v1);
    }
}

/// An accounts file written before the schema was versioned opens, migrated, with its data.
#[test]
fn an_accounts_file_from_before_migrations_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE users (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
         CREATE TABLE devices (id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
            name TEXT NOT NULL, kind TEXT NOT NULL, created_at INTEGER NOT NULL,
            revoked_at INTEGER);
         CREATE TABLE tokens (hash TEXT PRIMARY KEY, device_id TEXT NOT NULL, created_at INTEGER NOT NULL);
         INSERT INTO users VALUES ('ann', 1);
         INSERT INTO devices VALUES ('laptop', 'ann', 'L', 'laptop', 1, NULL);
         INSERT INTO tokens VALUES ('h', 'laptop', 1);",
    )
    .unwrap();
    drop(old);
    let a = SqliteAccounts::open(&path, Durability::Full).unwrap();
    let ann: UserId = "ann".parse().unwrap();
    assert!(a.has_user(&ann).unwrap());
    assert_eq!(
        a.principal("h").unwrap(),
        Some((ann.clone(), "laptop".parse().unwrap()))
    );
    assert_eq!(a.devices(&ann).unwrap()[0].last_seen, None);
    drop(a);
    // A file from a newer build is refused, not changed.
    let newer = rusqlite::Connection::open(&path).unwrap();
    newer.pragma_update(None, "user_version", 99).unwrap();
    drop(newer);
    assert!(matches!(
        SqliteAccounts::open(&path, Durability::Full),
        Err(mesh_store::StoreError::TooNew { found: 99, .. })
    ));
}
