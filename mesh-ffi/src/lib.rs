//! # mesh-ffi
//!
//! The C ABI of mesh. The conventions (status codes, out-parameters, error objects, strings,
//! handles, threads, callbacks) are the contract written in this crate's `README.md`; the
//! header `include/mesh.h` is generated from this crate by cbindgen.
//!
//! Every exported function is an `unsafe extern "C" fn`: its pointer arguments must be NULL or
//! valid for the call, as in any C API. Everything else — NULL, invalid UTF-8, invalid JSON,
//! use after close, panics — is checked and reported as a [`mesh_status`].

// This crate is the boundary with C: it must dereference the raw pointers C hands it and hand
// back pointers it owns. The workspace denies `unsafe_code`; this crate alone allows it. Every
// unsafe block is small and carries a `// SAFETY:` comment, and unsafe operations inside
// `unsafe fn`s still need their own blocks.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
// Every exported function has the same safety contract (pointers NULL or valid for the call;
// handles from this library and not yet freed), stated once in the header and the README
// rather than in a `# Safety` section on each of them.
#![allow(clippy::missing_safety_doc)]
// C names: `mesh_client`, `mesh_status`, `MESH_STATUS_OK`.
#![allow(non_camel_case_types)]

mod args;
mod client;
mod error;
mod events;
mod hub;
mod peers;
mod status;

pub use client::*;
pub use error::*;
pub use events::*;
pub use hub::*;
pub use peers::*;
pub use status::*;

use std::ffi::c_char;

/// The library's version (`"0.1.0"`), a static string.
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn mesh_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
