//! The `mesh-hub` command: serve a hub, or administer its accounts.
//!
//! ```text
//! mesh-hub --listen 127.0.0.1:7300 --data ./hub-data          serve
//! mesh-hub --config /etc/mesh-hub.toml                         serve, settings from a file
//! MESH_HUB_LISTEN=0.0.0.0:7300 mesh-hub                        … or from the environment
//! mesh-hub --data ./hub-data user add ann                      create a user
//! mesh-hub --data ./hub-data user list
//! mesh-hub --data ./hub-data device add ann laptop --name "Ann's laptop" --kind laptop
//!                                                              register a device, print its token
//! mesh-hub --data ./hub-data device token laptop              mint another token
//! mesh-hub --data ./hub-data device list ann
//! mesh-hub --data ./hub-data device revoke laptop             revoke a device and its tokens
//! mesh-hub --data ./hub-data user remove ann                   revoke every device of a user
//! mesh-hub --database postgres://mesh@db/mesh migrate         create or upgrade the schema
//! mesh-hub --database postgres://mesh@db/mesh --listen …       serve from PostgreSQL (any
//!                                                              number of processes at once)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_hub::config::Settings;
use mesh_hub::ops::logging;
use mesh_hub::{Accounts, Hub, HubError, TlsConfig, ACCOUNTS_DB};
use mesh_store::postgres::{PgAccounts, PgConfig, PgDatabase};

/// A self-hostable mesh hub: devices sync through it; it keeps accounts, device tokens and
/// member roles, and serves the REST API and live notifications.
#[derive(Parser)]
#[command(name = "mesh-hub", version)]
struct Cli {
    /// A TOML configuration file; flags and environment variables override what it says.
    #[arg(long, env = "MESH_HUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
    /// Benchmarks only: do not verify pushed versions' signatures, and authorize every version
    /// as the pusher's own write (as before signed versions). Never on a shared hub.
    #[arg(long)]
    skip_signature_checks: bool,
    /// Keep everything in this PostgreSQL database (`postgres://user:password@host/db`)
    /// instead of the data directory; any number of hub processes may serve it at once.
    #[arg(long, env = "MESH_HUB_DATABASE")]
    database: Option<String>,
    /// The PostgreSQL schema the tables live in (default: `public`).
    #[arg(long, env = "MESH_HUB_DB_SCHEMA")]
    db_schema: Option<String>,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "MESH_HUB_DB_CONNECTIONS", default_value_t = 16)]
    db_connections: usize,
    /// Apply the database's missing schema migrations at start.
    #[arg(long, env = "MESH_HUB_MIGRATE")]
    migrate: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the PostgreSQL schema (needs --database), then exit.
    Migrate,
    /// Copy the data directory to DEST (a new or empty directory) while the hub serves: a
    /// consistent snapshot of each database, private to this user. A hub started on the copy
    /// begins a new epoch, and devices offer back what it lacks (see docs/operations.md).
    Backup {
        /// Where to write the copy.
        dest: std::path::PathBuf,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// Manage devices and their tokens.
    Device {
        #[command(subcommand)]
        action: DeviceCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user.
    Add {
        /// The user id.
        user: String,
    },
    /// List users.
    List,
    /// Remove a user: every device revoked, the id never reused (folders and entries stay).
    Remove {
        /// The user id.
        user: String,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Register a device of a user and print its bearer token.
    Add {
        /// The owner.
        user: String,
        /// The device id (unique on the hub).
        device: String,
        /// A readable name.
        #[arg(long)]
        name: Option<String>,
        /// The kind of device (laptop, phone…).
        #[arg(long, default_value = "device")]
        kind: String,
    },
    /// Mint another token for a device and print it.
    Token {
        /// The device id.
        device: String,
    },
    /// Revoke a device: all its tokens stop working.
    Revoke {
        /// The device id.
        device: String,
    },
    /// List a user's devices.
    List {
        /// The owner.
        user: String,
    },
}

/// The PostgreSQL settings of the command line, if it names a database.
fn pg_config(cli: &PgArgs) -> Option<PgConfig> {
    let url = cli.database.as_ref()?;
    let mut config = PgConfig::new(url.clone()).max_connections(cli.db_connections);
    if let Some(schema) = &cli.db_schema {
        config = config.schema(schema.clone());
    }
    Some(config)
}

/// The database options, apart from the rest of the command line.
struct PgArgs {
    database: Option<String>,
    db_schema: Option<String>,
    db_connections: usize,
    migrate: bool,
}

fn admin(settings: &Settings, pg: &PgArgs, command: Command) -> Result<(), HubError> {
    let data = settings.data();
    let accounts = match pg_config(pg) {
        Some(config) => {
            let db = PgDatabase::connect(config)?;
            if let Command::Migrate = command {
                let applied = db.migrate()?;
                let (version, _) = db.version()?;
                println!("database at schema version {version} ({applied} migrations applied)");
                return Ok(());
            }
            if let Command::Backup { .. } = command {
                return Err(HubError::Store(
                    "backup copies a data directory; back a PostgreSQL database up with \
                     pg_dump (see docs/operations.md)"
                        .into(),
                ));
            }
            db.check_version()?;
            Accounts::over(Box::new(PgAccounts::new(db)))?
        }
        None => {
            if let Command::Backup { dest } = &command {
                let report = mesh_hub::backup(&data, dest)?;
                println!(
                    "backed up {} files ({} bytes) to {}",
                    report.files.len(),
                    report.bytes,
                    dest.display()
                );
                return Ok(());
            }
            if let Command::Migrate = command {
                return Err(HubError::Store(
                    "migrate needs --database (a data directory migrates itself)".into(),
                ));
            }
            mesh_hub::make_private(&data)?;
            // Revocations made here are on disk before the command says so.
            Accounts::open_with(&data.join(ACCOUNTS_DB), settings.durability()?)?
        }
    };
    match command {
        Command::Migrate | Command::Backup { .. } => {}
        Command::User { action } => match action {
            UserCmd::Add { user } => {
                accounts.add_user(&user.parse()?)?;
                println!("user {user} created");
            }
            UserCmd::List => {
                for u in accounts.users()? {
                    println!("{u}");
                }
            }
            UserCmd::Remove { user } => {
                let devices = accounts.remove_user(&user.parse()?)?;
                println!("user {user} removed ({} devices revoked)", devices.len());
            }
        },
        Command::Device { action } => match action {
            DeviceCmd::Add {
                user,
                device,
                name,
                kind,
            } => {
                let name = name.unwrap_or_else(|| device.clone());
                let token = accounts.add_device(&user.parse()?, &device.parse()?, &name, &kind)?;
                println!("{token}");
            }
            DeviceCmd::Token { device } => println!("{}", accounts.mint_token(&device.parse()?)?),
            DeviceCmd::Revoke { device } => {
                let owner = accounts.revoke_device(&device.parse()?)?;
                println!("device {device} of {owner} revoked");
            }
            DeviceCmd::List { user } => {
                let when = |t: Option<i64>| {
                    t.and_then(|t| mesh_core::time::Timestamp::from_unix(t).ok())
                        .map_or_else(|| "-".to_owned(), |t| t.to_string())
                };
                println!("DEVICE\tKIND\tNAME\tSTATE\tLAST SEEN\tENROLLED BY");
                for d in accounts.all_devices_of(&user.parse()?)? {
                    let state = match d.revoked_at {
                        Some(t) => format!("revoked {}", when(Some(t))),
                        None => "active".to_owned(),
                    };
                    let by = d
                        .enrolled_by
                        .map_or_else(|| "-".to_owned(), |b| b.to_string());
                    println!(
                        "{}\t{}\t{}\t{state}\t{}\t{by}",
                        d.id,
                        d.kind,
                        d.name,
                        when(d.last_seen)
                    );
                }
            }
        },
    }
    if pg.database.is_none() {
        // The accounts database may be new: private like the rest of the directory.
        mesh_hub::make_private(&data)?;
    }
    Ok(())
}

async fn serve(
    settings: Settings,
    pg: PgArgs,
    skip_signature_checks: bool,
) -> Result<(), HubError> {
    let tls = match settings.tls()? {
        Some((cert, key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        None => None,
    };
    let mut builder = Hub::builder();
    builder = match pg_config(&pg) {
        Some(config) => builder.postgres(config).migrate(pg.migrate),
        None => builder.data_dir(settings.data()),
    };
    let hub = builder
        .config(mesh_hub::HubConfig {
            verify_signatures: !skip_signature_checks,
            ..settings.hub_config()
        })
        .durability(settings.durability()?)
        .open()?;
    if skip_signature_checks {
        tracing::warn!("signature checks are off: every pushed version counts as its pusher's");
    }
    let shutdown = mesh_hub::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(settings.listen()).await?;
    // Scripts starting the hub on port 0 read the address from this line.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "mesh-hub listening on {scheme}://{}",
        listener.local_addr()?
    );
    hub.serve_with(listener, tls, shutdown).await
}

fn run(cli: Cli) -> Result<(), HubError> {
    let settings = match &cli.config {
        Some(path) => cli.settings.or(Settings::from_file(path)?),
        None => cli.settings,
    };
    logging::init(settings.log_level()?, settings.log_format()?);
    let pg = PgArgs {
        database: cli.database,
        db_schema: cli.db_schema,
        db_connections: cli.db_connections,
        migrate: cli.migrate,
    };
    match cli.command {
        Some(command) => admin(&settings, &pg, command),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(settings, pg, cli.skip_signature_checks)),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-hub: {e}");
            ExitCode::FAILURE
        }
    }
}
