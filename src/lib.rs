//! # mesh
//!
//! The umbrella crate of the workspace (not published): it re-exports the layers so that the
//! examples, tests and benchmarks at the top of the workspace can use them with one
//! dependency. Applications depend on `mesh-client` (see its `prelude`), not on this crate,
//! which pulls in the hub.
//!
//! * [`core`] — `mesh-core`: the resource model, the FeedSync engine, replicas and the
//!   sans-I/O sync protocol.
//! * [`client`] — `mesh-client`: the async client, stores, transports and sync engine.
//! * [`hub`] — `mesh-hub`: the self-hostable hub (HTTP API, accounts, notifications).

pub use mesh_client as client;
pub use mesh_core as core;
pub use mesh_hub as hub;
