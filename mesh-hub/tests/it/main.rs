//! Integration tests of mesh-hub (one test binary; one module per area).
//!
//! The transport conformance suite and the client test helpers of `mesh-client` are compiled
//! in from their files, so that the HTTP transport passes exactly the suite the in-process
//! transports pass.

#[path = "../../../mesh-client/tests/it/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../../mesh-client/tests/it/transport_suite.rs"]
mod transport_suite;

mod api;
mod attacks;
mod backup;
mod blob_limits;
mod blobs;
mod compression;
mod datadir;
mod e2e;
mod enrollment;
mod folder_delete;
mod http_transport;
mod hubs;
mod limits;
mod notified;
mod ops;
mod oracles;
mod relay;
mod router_props;
mod scale_out;
mod sdk;
