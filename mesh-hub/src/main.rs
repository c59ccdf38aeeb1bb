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
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_hub::config::Settings;
use mesh_hub::ops::logging;
use mesh_hub::{Accounts, Hub, HubError, TlsConfig, ACCOUNTS_DB};

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
    mesh_hub::make_private(data)?;
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
    // The accounts database may be new: private like the rest of the directory.
    mesh_hub::make_private(data)
}

async fn serve(settings: Settings, skip_signature_checks: bool) -> Result<(), HubError> {
    let tls = match settings.tls()? {
        Some((cert, key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        None => None,
    };
    let hub = Hub::builder()
        .data_dir(settings.data())
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
    match cli.command {
        Some(command) => admin(&settings.data(), command),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(settings, cli.skip_signature_checks)),
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
