//! The `mesh-hub` command: serve a hub, or administer its accounts.
//!
//! ```text
//! mesh-hub --listen 127.0.0.1:7300 --data ./hub-data          serve
//! mesh-hub --data ./hub-data user add ann                      create a user
//! mesh-hub --data ./hub-data user list
//! mesh-hub --data ./hub-data device add ann laptop --name "Ann's laptop" --kind laptop
//!                                                              register a device, print its token
//! mesh-hub --data ./hub-data device token laptop              mint another token
//! mesh-hub --data ./hub-data device list ann
//! mesh-hub --data ./hub-data device revoke laptop             revoke a device and its tokens
//! mesh-hub --database postgres://mesh@db/mesh migrate         create or upgrade the schema
//! mesh-hub --database postgres://mesh@db/mesh --listen …       serve from PostgreSQL (any
//!                                                              number of processes at once)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_hub::{Accounts, Hub, HubError, ACCOUNTS_DB};
use mesh_store::postgres::{PgAccounts, PgConfig, PgDatabase};
use mesh_store::Durability;
use tracing_subscriber::filter::LevelFilter;

/// A self-hostable mesh hub: devices sync through it; it keeps accounts, device tokens and
/// member roles, and serves the REST API and live notifications.
#[derive(Parser)]
#[command(name = "mesh-hub", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Data directory: accounts.db, the replica's hub.db and the blob store blobs.db.
    #[arg(long, default_value = "./hub-data")]
    data: PathBuf,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log: LevelFilter,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    max_body: usize,
    /// Durability of the replica and blob databases: `full` (every commit synced to disk) or `normal`
    /// (survives a crash of the hub, not of the machine; faster).
    #[arg(long, default_value = "full")]
    durability: String,
    /// Benchmarks only: do not verify pushed versions' signatures, and authorize every version
    /// as the pusher's own write (as before signed versions). Never on a shared hub.
    #[arg(long)]
    skip_signature_checks: bool,
    /// Keep everything in this PostgreSQL database (`postgres://user:password@host/db`)
    /// instead of the data directory; any number of hub processes may serve it at once.
    #[arg(long)]
    database: Option<String>,
    /// The PostgreSQL schema the tables live in (default: `public`).
    #[arg(long)]
    db_schema: Option<String>,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, default_value_t = 16)]
    db_connections: usize,
    /// Apply the database's missing schema migrations at start.
    #[arg(long)]
    migrate: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the PostgreSQL schema (needs --database), then exit.
    Migrate,
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
fn pg_config(cli: &Cli) -> Option<PgConfig> {
    let url = cli.database.as_ref()?;
    let mut config = PgConfig::new(url.clone()).max_connections(cli.db_connections);
    if let Some(schema) = &cli.db_schema {
        config = config.schema(schema.clone());
    }
    Some(config)
}

fn admin(cli: &Cli, command: Command) -> Result<(), HubError> {
    let accounts = match pg_config(cli) {
        Some(config) => {
            let db = PgDatabase::connect(config)?;
            if let Command::Migrate = command {
                let applied = db.migrate()?;
                let (version, _) = db.version()?;
                println!("database at schema version {version} ({applied} migrations applied)");
                return Ok(());
            }
            db.check_version()?;
            Accounts::over(Box::new(PgAccounts::new(db)))?
        }
        None => {
            if let Command::Migrate = command {
                return Err(HubError::Store(
                    "migrate needs --database (a data directory migrates itself)".into(),
                ));
            }
            std::fs::create_dir_all(&cli.data)?;
            Accounts::open(&cli.data.join(ACCOUNTS_DB))?
        }
    };
    match command {
        Command::Migrate => {}
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
    Ok(())
}

async fn serve(cli: Cli) -> Result<(), HubError> {
    let durability = match cli.durability.as_str() {
        "full" => Durability::Full,
        "normal" => Durability::Normal,
        other => {
            return Err(HubError::Store(format!(
                "--durability {other:?}: expected full or normal"
            )))
        }
    };
    let mut builder = Hub::builder();
    builder = match pg_config(&cli) {
        Some(config) => builder.postgres(config).migrate(cli.migrate),
        None => builder.data_dir(&cli.data),
    };
    let hub = builder
        .config(mesh_hub::HubConfig {
            max_body: cli.max_body,
            verify_signatures: !cli.skip_signature_checks,
            ..mesh_hub::HubConfig::default()
        })
        .durability(durability)
        .build()?;
    if cli.skip_signature_checks {
        tracing::warn!("signature checks are off: every pushed version counts as its pusher's");
    }
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    // Scripts starting the hub on port 0 read the address from this line.
    println!("mesh-hub listening on http://{}", listener.local_addr()?);
    hub.serve(listener, mesh_hub::shutdown_signal()).await
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command.take() {
        Some(command) => admin(&cli, command),
        None => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(serve(cli)),
            Err(e) => Err(HubError::Io(e)),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-hub: {e}");
            ExitCode::FAILURE
        }
    }
}
