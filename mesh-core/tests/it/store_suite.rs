//! The store conformance suite against the in-memory store.

use mesh_core::store::{suite, MemoryStore};

#[test]
fn memory_store_passes_the_store_suite() {
    suite::run_all(MemoryStore::new);
}
