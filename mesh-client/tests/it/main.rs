//! Integration tests of mesh-client (one test binary; one module per area).

mod client;
mod common;
mod convergence;
mod downloads;
mod incremental;
mod invitations;
mod mapping;
mod mapping_in_place;
mod mapping_props;
mod mapping_safety;
mod peer;
mod peer_discovery;
mod peer_events;
mod peer_mdns;
mod peer_mesh;
mod peer_revocations;
mod peer_rules;
mod pipelining;
mod role_matrix;
mod sdk;
mod transport_suite;
mod trust;
