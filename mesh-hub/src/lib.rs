//! mesh-hub
