//! Criterion benchmarks of mesh-core (filled in by the benchmark work).
fn main() {}
