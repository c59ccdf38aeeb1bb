//! The hub's Prometheus metrics, served as text at `GET /metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: String,
    pub route: &'static str,
    pub status: u16,
}

/// The label of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub route: &'static str,
}

/// The label of a store size.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StoreLabel {
    pub store: &'static str,
}

fn latency() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric the hub keeps. Routes are the API's templates (`/mesh/folders/{folder}`), so
/// their number is fixed whatever clients send.
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub rate_limited: Counter,
    pub entries_merged: Counter,
    pub streams_open: Gauge,
    pub fetches_waiting: Gauge,
    pub store_bytes: Family<StoreLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("mesh_hub");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency as fn() -> Histogram,
        );
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let connections_open = Gauge::default();
        let connections_refused = Counter::default();
        let rate_limited = Counter::default();
        let entries_merged = Counter::default();
        let streams_open = Gauge::default();
        let fetches_waiting = Gauge::default();
        let store_bytes = Family::<StoreLabel, Gauge>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's header to its response's header, by route",
            latency.clone(),
        );
        registry.register(
            "received_bytes",
            "Request body bytes received",
            bytes_in.clone(),
        );
        registry.register("sent_bytes", "Response body bytes sent", bytes_out.clone());
        registry.register(
            "connections_open",
            "Connections being served",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused because the hub had as many as it may serve",
            connections_refused.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429 by the per-device and per-user rate limits",
            rate_limited.clone(),
        );
        registry.register(
            "entries_merged",
            "Entry versions pushed that changed the hub's replica",
            entries_merged.clone(),
        );
        registry.register(
            "notification_streams_open",
            "Notification streams (server-sent events and long-polls) open",
            streams_open.clone(),
        );
        registry.register(
            "fetches_waiting",
            "Object fetches waiting for uploads under way to bring their objects (relayed blobs)",
            fetches_waiting.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes held by the hub's stores: blobs, the objects' total size; replica_file, \
             blobs_file, accounts_file, the databases' files on disk",
            store_bytes.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            connections_open,
            connections_refused,
            rate_limited,
            entries_merged,
            streams_open,
            fetches_waiting,
            store_bytes,
        })
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }
}
