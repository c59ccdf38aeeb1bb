//! Operations: health and readiness, Prometheus metrics, and the request log.

pub(crate) mod health;
pub mod logging;
pub(crate) mod metrics;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use mesh_core::id::{DeviceId, UserId};
use prometheus_client::metrics::counter::Counter;

use crate::server::body::Sent;
use metrics::{Metrics, RequestLabels, RouteLabel};

/// Who made a request, filled in once its token is checked (for the request log).
#[derive(Clone, Default, Debug)]
pub(crate) struct Caller(Arc<Mutex<Option<(UserId, DeviceId)>>>);

impl Caller {
    /// Records the request's user and device.
    pub fn set(&self, user: &UserId, device: &DeviceId) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((user.clone(), device.clone()));
    }

    fn get(&self) -> Option<(UserId, DeviceId)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One answered request, as the log and the metrics see it.
pub(crate) struct Answered<'a> {
    pub id: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub route: &'static str,
    pub status: u16,
    pub elapsed: Duration,
    pub caller: &'a Caller,
}

/// Counts and logs what the server does. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Observer {
    pub metrics: Arc<Metrics>,
}

impl Observer {
    pub fn new() -> Self {
        Observer {
            metrics: Metrics::new(),
        }
    }

    /// A connection was refused for being over the limit.
    pub fn connection_refused(&self) {
        self.metrics.connections_refused.inc();
    }

    /// Counts a connection as open while the guard lives.
    pub fn connection_guard(&self) -> ConnectionGuard {
        self.metrics.connections_open.inc();
        ConnectionGuard(self.clone())
    }

    /// The counter of request body bytes.
    pub fn received(&self) -> Counter {
        self.metrics.bytes_in.clone()
    }

    /// Counts one response's bytes.
    pub fn sent(&self) -> SentBytes {
        SentBytes(self.metrics.bytes_out.clone())
    }

    /// Logs one request line and counts it.
    pub fn answered(&self, a: &Answered<'_>) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                method: a.method.as_str().to_owned(),
                route: a.route,
                status: a.status,
            })
            .inc();
        self.metrics
            .latency
            .get_or_create(&RouteLabel { route: a.route })
            .observe(a.elapsed.as_secs_f64());
        let who = a.caller.get();
        let (user, device) = match &who {
            Some((u, d)) => (u.as_str(), d.as_str()),
            None => ("-", "-"),
        };
        tracing::info!(
            target: "mesh_hub::request",
            request_id = a.id,
            method = a.method.as_str(),
            path = a.path,
            route = a.route,
            status = a.status,
            ms = a.elapsed.as_secs_f64() * 1e3,
            user,
            device,
            "request"
        );
    }
}

/// Keeps a connection counted as open.
pub(crate) struct ConnectionGuard(Observer);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.metrics.connections_open.dec();
    }
}

/// Adds response bytes to the sent counter.
pub(crate) struct SentBytes(Counter);

impl Sent for SentBytes {
    fn bytes(&mut self, n: usize) {
        self.0.inc_by(n as u64);
    }
}

/// A fresh request id: 16 hex digits.
pub(crate) fn request_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return format!("{:016x}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
