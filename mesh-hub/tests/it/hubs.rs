//! Starting hubs on ephemeral loopback ports, and accounts for tests.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_client::transport::{HttpConfig, HttpTransport};
use mesh_hub::{Hub, HubError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A hub served on 127.0.0.1 with an ephemeral port; stopped (gracefully) on drop.
pub struct TestHub {
    pub hub: Hub,
    pub url: String,
    #[allow(dead_code)]
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), HubError>>>,
}

impl TestHub {
    pub async fn start(hub: Hub) -> TestHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(hub, listener)
    }

    /// Serves `hub` on `listener` (bound to a loopback address).
    pub fn start_on(hub: Hub, listener: tokio::net::TcpListener) -> TestHub {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        TestHub {
            hub,
            url: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A fresh hub of the backend under test: in memory, or on PostgreSQL (a schema of its
    /// own) when `MESH_HUB_BACKEND=postgres` (with `MESH_TEST_POSTGRES` naming the server;
    /// `.ci/run` runs the suite both ways).
    pub async fn memory() -> TestHub {
        Self::start(fresh_hub()).await
    }

    /// Registers `device` of `user` (creating the user if needed) and returns its token.
    pub fn token(&self, user: &str, device: &str) -> String {
        let u = user.parse().unwrap();
        if !self.hub.accounts().has_user(&u).unwrap() {
            self.hub.accounts().add_user(&u).unwrap();
        }
        self.hub
            .accounts()
            .add_device(&u, &device.parse().unwrap(), device, "test")
            .unwrap()
    }

    /// An HTTP transport for a new device of `user`.
    pub fn transport(&self, user: &str, device: &str) -> HttpTransport {
        HttpTransport::with_config(&self.url, self.token(user, device), fast()).unwrap()
    }

    /// Stops serving and waits until the server is down.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("the hub stops")
                .unwrap()
                .unwrap();
        }
    }
}

/// A new hub on the backend under test (see [`TestHub::memory`]).
pub fn fresh_hub() -> Hub {
    fresh_hub_with(mesh_hub::HubConfig::default())
}

/// [`fresh_hub`] with these limits.
pub fn fresh_hub_with(config: mesh_hub::HubConfig) -> Hub {
    match std::env::var("MESH_HUB_BACKEND").as_deref() {
        Ok("postgres") => {
            let url = std::env::var("MESH_TEST_POSTGRES")
                .expect("MESH_HUB_BACKEND=postgres needs MESH_TEST_POSTGRES");
            Hub::builder()
                .postgres(mesh_store::postgres::PgConfig::new(url).schema(fresh_schema()))
                .migrate(true)
                .config(config)
                .build()
                .unwrap()
        }
        Ok("memory") | Err(_) => Hub::builder().config(config).build().unwrap(),
        Ok(other) => panic!("MESH_HUB_BACKEND={other:?}: expected memory or postgres"),
    }
}

/// A PostgreSQL schema no other test uses.
pub fn fresh_schema() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "hub_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        fastrand::u32(..)
    )
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Short timeouts and backoff for tests.
pub fn fast() -> HttpConfig {
    HttpConfig::default()
        .with_timeout(Duration::from_secs(10))
        .with_connect_timeout(Duration::from_secs(2))
        .with_retries(2)
        .with_backoff_min(Duration::from_millis(10))
        .with_backoff_max(Duration::from_millis(100))
}

/// A reqwest client speaking to a hub as one device.
pub struct Rest {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Rest {
    pub fn new(hub: &TestHub, token: String) -> Rest {
        Rest {
            base: hub.url.clone(),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::DELETE, path)).await
    }
}

/// Sends a request; returns the status and the JSON body (`null` when empty). Every error
/// answer must carry `{code, message}`.
pub async fn send(rb: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let v: serde_json::Value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "status {status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    if status >= 400 {
        assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
    }
    (status, v)
}
