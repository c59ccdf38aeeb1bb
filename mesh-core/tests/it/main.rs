//! Integration tests of mesh-core (one test binary; one module per area).

mod atom;
mod blob;
mod common;
mod conformance;
mod guard;
mod properties;
mod rules;
mod session;
mod store_suite;
mod trust;
mod trust_props;
