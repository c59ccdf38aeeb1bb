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
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_hub::{Accounts, Hub, HubError, ACCOUNTS_DB};
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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

fn admin(data: &std::path::Path, command: Command) -> Result<(), HubError> {
    std::fs::create_dir_all(data)?;
    let accounts = Accounts::open(&data.join(ACCOUNTS_DB))?;
    match command {
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
                for d in accounts.devices(&user.parse()?)? {
                    println!("{}\t{}\t{}", d.id, d.kind, d.name);
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
    let hub = Hub::builder()
        .data_dir(&cli.data)
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
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Some(command) => admin(&cli.data, command),
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
