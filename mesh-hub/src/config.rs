//! The `mesh-hub` command's settings: flags, environment variables (`MESH_HUB_…`) and a TOML
//! configuration file, in that order of precedence, then the defaults.
//!
//! ```toml
//! listen = "0.0.0.0:7300"
//! data = "/var/lib/mesh-hub"
//! log-format = "json"
//! tls-cert = "/etc/mesh-hub/cert.pem"
//! tls-key = "/etc/mesh-hub/key.pem"
//! max-connections = 4096
//! device-rate = 50
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_store::Durability;
use serde::Deserialize;

use crate::error::HubError;
use crate::ops::logging::LogFormat;
use crate::state::HubConfig;

/// Every setting of a serving hub; each may come from a flag, an environment variable or the
/// configuration file (keys spelled like the flags, without the dashes in front).
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port, printed at start) [default: 127.0.0.1:7300].
    #[arg(long, env = "MESH_HUB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory: accounts.db, the replica's hub.db and the blob store blobs.db [default: ./hub-data].
    #[arg(long, env = "MESH_HUB_DATA")]
    pub data: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long, env = "MESH_HUB_LOG")]
    pub log: Option<String>,
    /// Log format: text (colours only on a terminal) or json (one object a line) [default: text].
    #[arg(long, env = "MESH_HUB_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Durability of the replica and blob databases: full (every commit synced to disk) or
    /// normal (survives a crash of the hub, not of the machine; faster) [default: full].
    #[arg(long, env = "MESH_HUB_DURABILITY")]
    pub durability: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "MESH_HUB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "MESH_HUB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes [default: 33554432].
    #[arg(long, env = "MESH_HUB_MAX_BODY")]
    pub max_body: Option<usize>,
    /// Most connections served at once; past it, 503 [default: 1024].
    #[arg(long, env = "MESH_HUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's header [default: 10].
    #[arg(long, env = "MESH_HUB_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds an idle connection is kept open [default: 60].
    #[arg(long, env = "MESH_HUB_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Seconds a client has to send a request's body [default: 120].
    #[arg(long, env = "MESH_HUB_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Requests per second one device may sustain; 0: no limit [default: 100].
    #[arg(long, env = "MESH_HUB_DEVICE_RATE")]
    pub device_rate: Option<u32>,
    /// Requests one device may make at once after being quiet [default: 1000].
    #[arg(long, env = "MESH_HUB_DEVICE_BURST")]
    pub device_burst: Option<u32>,
    /// Requests per second one user's devices together may sustain; 0: no limit [default: 400].
    #[arg(long, env = "MESH_HUB_USER_RATE")]
    pub user_rate: Option<u32>,
    /// Requests one user's devices may make at once after being quiet [default: 4000].
    #[arg(long, env = "MESH_HUB_USER_BURST")]
    pub user_burst: Option<u32>,
    /// Most folders one user may own; 0: no limit [default: 1000].
    #[arg(long, env = "MESH_HUB_MAX_FOLDERS")]
    pub max_folders: Option<u32>,
    /// Most bytes of files the folders one user owns may hold (each object once; a folder
    /// counts against each of its owners); 0: no limit [default: 10737418240].
    #[arg(long, env = "MESH_HUB_MAX_BYTES")]
    pub max_bytes: Option<u64>,
    /// Largest blob (a manifest's declared length) accepted, in bytes [default: 17179869184].
    #[arg(long, env = "MESH_HUB_MAX_BLOB")]
    pub max_blob: Option<u64>,
    /// Longest an objects fetch may wait for objects still being uploaded (relayed blobs), in
    /// seconds; 0: fetches never wait [default: 10].
    #[arg(long, env = "MESH_HUB_FETCH_WAIT")]
    pub fetch_wait: Option<u64>,
    /// How long after a folder's last upload a waiting fetch still expects more, in seconds
    /// [default: 2].
    #[arg(long, env = "MESH_HUB_UPLOAD_IDLE")]
    pub upload_idle: Option<u64>,
    /// A token `GET /metrics` requires (as `Authorization: Bearer …`); without one the metrics
    /// are open to anyone who reaches the hub.
    #[arg(long, env = "MESH_HUB_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// Takes `a` when set, else `b`.
macro_rules! prefer {
    ($a:expr, $b:expr, $($f:ident),*) => {
        Settings { $($f: $a.$f.or($b.$f)),* }
    };
}

impl Settings {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Settings, HubError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| HubError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| HubError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML configuration text.
    pub fn from_toml(text: &str) -> Result<Settings, HubError> {
        toml::from_str(text).map_err(|e| HubError::Config(e.to_string()))
    }

    /// These settings, with the ones they leave unset taken from `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        prefer!(
            self,
            fallback,
            listen,
            data,
            log,
            log_format,
            durability,
            tls_cert,
            tls_key,
            max_body,
            max_connections,
            header_timeout,
            idle_timeout,
            body_timeout,
            device_rate,
            device_burst,
            user_rate,
            user_burst,
            max_folders,
            max_bytes,
            max_blob,
            fetch_wait,
            upload_idle,
            metrics_token
        )
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7300)))
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| "./hub-data".into())
    }

    /// The log level.
    pub fn log_level(&self) -> Result<tracing_subscriber::filter::LevelFilter, HubError> {
        let s = self.log.as_deref().unwrap_or("info");
        s.parse().map_err(|_| {
            HubError::Config(format!(
                "log {s:?}: expected error, warn, info, debug or trace"
            ))
        })
    }

    /// The log format.
    pub fn log_format(&self) -> Result<LogFormat, HubError> {
        self.log_format
            .as_deref()
            .unwrap_or("text")
            .parse()
            .map_err(HubError::Config)
    }

    /// The durability of the stores.
    pub fn durability(&self) -> Result<Durability, HubError> {
        match self.durability.as_deref().unwrap_or("full") {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(HubError::Config(format!(
                "durability {other:?}: expected full or normal"
            ))),
        }
    }

    /// The TLS certificate and key files, when the hub serves HTTPS.
    pub fn tls(&self) -> Result<Option<(&Path, &Path)>, HubError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            _ => Err(HubError::Config("tls-cert and tls-key go together".into())),
        }
    }

    /// The hub's limits: the defaults, changed where these settings say so.
    pub fn hub_config(&self) -> HubConfig {
        let mut c = HubConfig::default();
        let secs = Duration::from_secs;
        if let Some(v) = self.max_body {
            c.max_body = v;
        }
        if let Some(v) = self.max_connections {
            c.connections.max_connections = v;
        }
        if let Some(v) = self.header_timeout {
            c.connections.header_read_timeout = secs(v);
        }
        if let Some(v) = self.idle_timeout {
            c.connections.idle_timeout = secs(v);
        }
        if let Some(v) = self.body_timeout {
            c.connections.body_timeout = secs(v);
        }
        if let Some(v) = self.device_rate {
            c.rates.device_per_second = v;
        }
        if let Some(v) = self.device_burst {
            c.rates.device_burst = v;
        }
        if let Some(v) = self.user_rate {
            c.rates.user_per_second = v;
        }
        if let Some(v) = self.user_burst {
            c.rates.user_burst = v;
        }
        if let Some(v) = self.max_folders {
            c.quotas.max_folders_per_user = v;
        }
        if let Some(v) = self.max_bytes {
            c.quotas.max_bytes_per_user = v;
        }
        if let Some(v) = self.max_blob {
            c.max_blob = v;
        }
        if let Some(v) = self.fetch_wait {
            c.fetch_wait_max = secs(v);
        }
        if let Some(v) = self.upload_idle {
            c.upload_idle = secs(v);
        }
        c.metrics_token = self.metrics_token.clone();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_fills_what_flags_leave_unset() {
        let file = Settings::from_toml(
            r#"
            listen = "0.0.0.0:8443"
            data = "/srv/hub"
            max-connections = 20
            device-rate = 7
            log-format = "json"
            fetch-wait = 0
            "#,
        )
        .unwrap();
        let flags = Settings {
            device_rate: Some(9),
            ..Settings::default()
        };
        let s = flags.or(file);
        assert_eq!(s.listen().to_string(), "0.0.0.0:8443");
        assert_eq!(s.data(), PathBuf::from("/srv/hub"));
        assert_eq!(s.log_format().unwrap(), LogFormat::Json);
        let c = s.hub_config();
        assert_eq!(c.connections.max_connections, 20);
        assert_eq!(c.rates.device_per_second, 9);
        assert_eq!(c.fetch_wait_max, Duration::ZERO);
        assert_eq!(c.upload_idle, HubConfig::default().upload_idle);
        assert_eq!(
            c.rates.user_per_second,
            HubConfig::default().rates.user_per_second
        );
    }

    #[test]
    fn bad_files_and_values_are_typed_errors() {
        for bad in ["nope = 1", "listen = 5", "max-body = -1", "[x"] {
            assert!(
                matches!(Settings::from_toml(bad), Err(HubError::Config(_))),
                "{bad}"
            );
        }
        let s = Settings {
            durability: Some("sometimes".into()),
            log_format: Some("xml".into()),
            tls_cert: Some("c.pem".into()),
            ..Settings::default()
        };
        assert!(matches!(s.durability(), Err(HubError::Config(_))));
        assert!(matches!(s.log_format(), Err(HubError::Config(_))));
        assert!(matches!(s.tls(), Err(HubError::Config(_))));
        assert_eq!(Settings::default().hub_config(), HubConfig::default());
    }
}
