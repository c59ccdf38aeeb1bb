//! Status codes, the owned error object, and the panic-catching wrapper of every call.

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mesh_client::{ClientError, ErrorKind};

/// The result of every fallible call. The values are fixed: new ones are only appended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mesh_status {
    /// Success.
    MESH_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    MESH_STATUS_NULL_ARGUMENT = 1,
    /// A string argument was not valid UTF-8.
    MESH_STATUS_INVALID_UTF8 = 2,
    /// A JSON argument did not parse, or did not have the expected shape.
    MESH_STATUS_INVALID_JSON = 3,
    /// An argument was invalid (an id, a role, a value out of range).
    MESH_STATUS_INVALID_INPUT = 4,
    /// The thing asked for does not exist.
    MESH_STATUS_NOT_FOUND = 5,
    /// It exists already.
    MESH_STATUS_ALREADY_EXISTS = 6,
    /// The user's role in the folder does not allow it.
    MESH_STATUS_PERMISSION_DENIED = 7,
    /// The local store failed.
    MESH_STATUS_STORE = 8,
    /// A remote could not be reached or answered wrongly.
    MESH_STATUS_TRANSPORT = 9,
    /// The client was closed (`mesh_client_close`).
    MESH_STATUS_CLOSED = 10,
    /// No event arrived before the timeout (`mesh_client_poll_event`).
    MESH_STATUS_TIMEOUT = 11,
    /// This build does not support the request (kept for compatibility; not returned today).
    MESH_STATUS_UNSUPPORTED = 12,
    /// A bug inside the library was caught before it crossed the boundary.
    MESH_STATUS_PANIC = 13,
    /// An unexpected internal failure.
    MESH_STATUS_INTERNAL = 14,
    /// A remote cannot be reached (no route, refused, timed out): try again later.
    MESH_STATUS_OFFLINE = 15,
    /// A remote refused the credentials: the user has to sign in again.
    MESH_STATUS_UNAUTHORIZED = 16,
    /// The device or its token was revoked: the device has to be enrolled again.
    MESH_STATUS_REVOKED = 17,
    /// A remote answered something that is not the protocol, or data failed verification.
    MESH_STATUS_PROTOCOL = 18,
    /// A size or count limit of the remote was exceeded.
    MESH_STATUS_QUOTA = 19,
    /// The remote asks to slow down.
    MESH_STATUS_RATE_LIMITED = 20,
    /// The entry changed since the expected version, or a resolution's version is gone.
    MESH_STATUS_CONFLICT = 21,
    /// The store is open in another client (in this process or another).
    MESH_STATUS_LOCKED = 22,
    /// The hub says the token belongs to another user or device than the configuration.
    MESH_STATUS_MISMATCH = 23,
}

use mesh_status::*;

/// The one place where Rust errors collapse into C statuses.
pub(crate) fn status_of(kind: ErrorKind) -> mesh_status {
    match kind {
        ErrorKind::InvalidInput => MESH_STATUS_INVALID_INPUT,
        ErrorKind::NotFound => MESH_STATUS_NOT_FOUND,
        ErrorKind::AlreadyExists => MESH_STATUS_ALREADY_EXISTS,
        ErrorKind::PermissionDenied => MESH_STATUS_PERMISSION_DENIED,
        ErrorKind::Store => MESH_STATUS_STORE,
        ErrorKind::Transport => MESH_STATUS_TRANSPORT,
        ErrorKind::Closed => MESH_STATUS_CLOSED,
        ErrorKind::Offline => MESH_STATUS_OFFLINE,
        ErrorKind::Unauthorized => MESH_STATUS_UNAUTHORIZED,
        ErrorKind::Revoked => MESH_STATUS_REVOKED,
        ErrorKind::Protocol => MESH_STATUS_PROTOCOL,
        ErrorKind::Quota => MESH_STATUS_QUOTA,
        ErrorKind::RateLimited => MESH_STATUS_RATE_LIMITED,
        ErrorKind::Conflict => MESH_STATUS_CONFLICT,
        ErrorKind::Locked => MESH_STATUS_LOCKED,
        ErrorKind::Mismatch => MESH_STATUS_MISMATCH,
        _ => MESH_STATUS_INTERNAL,
    }
}

/// An error inside the crate, before it becomes a status and an optional `mesh_error`.
#[derive(Debug)]
pub(crate) struct Error {
    pub status: mesh_status,
    pub message: String,
}

impl Error {
    pub fn new(status: mesh_status, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }

    pub fn null(arg: &str) -> Self {
        Error::new(MESH_STATUS_NULL_ARGUMENT, format!("{arg} is NULL"))
    }

    pub fn json(arg: &str, e: &serde_json::Error) -> Self {
        Error::new(MESH_STATUS_INVALID_JSON, format!("{arg}: {e}"))
    }

    pub fn not_found(what: &str) -> Self {
        Error::new(MESH_STATUS_NOT_FOUND, format!("{what} not found"))
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::new(status_of(e.kind()), e.to_string())
    }
}

impl From<mesh_core::CoreError> for Error {
    fn from(e: mesh_core::CoreError) -> Self {
        ClientError::from(e).into()
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Error detail: a status and a message. Owned by the caller, freed with `mesh_error_free`.
pub struct mesh_error {
    status: mesh_status,
    message: CString,
}

fn c_string_lossy(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|b| *b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Runs the body of an exported function: catches panics, turns errors into a status, and
/// hands error detail to the caller through `error` (when not NULL). Every exported function
/// that returns a status goes through here.
pub(crate) fn guard(error: *mut *mut mesh_error, f: impl FnOnce() -> Result<()>) -> mesh_status {
    let e = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return MESH_STATUS_OK,
        Ok(Err(e)) => e,
        Err(payload) => Error::new(
            MESH_STATUS_PANIC,
            format!("panic in mesh: {}", panic_message(payload.as_ref())),
        ),
    };
    let status = e.status;
    if !error.is_null() {
        let boxed = Box::new(mesh_error {
            status,
            message: c_string_lossy(e.message),
        });
        // SAFETY: `error` is non-NULL and, by the contract of every exported function, points
        // to writable storage for one pointer.
        unsafe { error.write(Box::into_raw(boxed)) };
    }
    status
}

/// Runs the body of an exported function that returns nothing: a panic is swallowed.
pub(crate) fn guard_void(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// The status of an error (never `MESH_STATUS_OK`); `MESH_STATUS_NULL_ARGUMENT` for NULL.
///
/// Thread-safety: may be called from any thread; the error must not be freed meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mesh_error_status(error: *const mesh_error) -> mesh_status {
    let mut status = MESH_STATUS_NULL_ARGUMENT;
    guard_void(|| {
        // SAFETY: NULL or a live error from this library, by contract.
        if let Some(e) = unsafe { error.as_ref() } {
            status = e.status;
        }
    });
    status
}

/// The error's message (UTF-8), valid until the error is freed; `""` for NULL.
///
/// Thread-safety: may be called from any thread; the error must not be freed meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mesh_error_message(error: *const mesh_error) -> *const c_char {
    let mut out: *const c_char = c"".as_ptr();
    guard_void(|| {
        // SAFETY: NULL or a live error from this library, by contract.
        if let Some(e) = unsafe { error.as_ref() } {
            out = e.message.as_ptr();
        }
    });
    out
}

/// Frees an error. `mesh_error_free(NULL)` does nothing.
///
/// Thread-safety: any thread, once no other thread uses the error.
#[no_mangle]
pub unsafe extern "C" fn mesh_error_free(error: *mut mesh_error) {
    guard_void(|| {
        if !error.is_null() {
            // SAFETY: a non-NULL error came from `Box::into_raw` in `guard` and, by contract,
            // is freed once.
            drop(unsafe { Box::from_raw(error) });
        }
    });
}

/// The name of a status (`"MESH_STATUS_NOT_FOUND"`), a static string; `"MESH_STATUS_UNKNOWN"`
/// for a value that is not a status. Takes an `int` so that any value is safe to pass.
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn mesh_status_name(status: c_int) -> *const c_char {
    let name: &'static std::ffi::CStr = match status {
        0 => c"MESH_STATUS_OK",
        1 => c"MESH_STATUS_NULL_ARGUMENT",
        2 => c"MESH_STATUS_INVALID_UTF8",
        3 => c"MESH_STATUS_INVALID_JSON",
        4 => c"MESH_STATUS_INVALID_INPUT",
        5 => c"MESH_STATUS_NOT_FOUND",
        6 => c"MESH_STATUS_ALREADY_EXISTS",
        7 => c"MESH_STATUS_PERMISSION_DENIED",
        8 => c"MESH_STATUS_STORE",
        9 => c"MESH_STATUS_TRANSPORT",
        10 => c"MESH_STATUS_CLOSED",
        11 => c"MESH_STATUS_TIMEOUT",
        12 => c"MESH_STATUS_UNSUPPORTED",
        13 => c"MESH_STATUS_PANIC",
        14 => c"MESH_STATUS_INTERNAL",
        15 => c"MESH_STATUS_OFFLINE",
        16 => c"MESH_STATUS_UNAUTHORIZED",
        17 => c"MESH_STATUS_REVOKED",
        18 => c"MESH_STATUS_PROTOCOL",
        19 => c"MESH_STATUS_QUOTA",
        20 => c"MESH_STATUS_RATE_LIMITED",
        21 => c"MESH_STATUS_CONFLICT",
        22 => c"MESH_STATUS_LOCKED",
        23 => c"MESH_STATUS_MISMATCH",
        _ => c"MESH_STATUS_UNKNOWN",
    };
    name.as_ptr()
}

/// Frees a string this library returned through a `char **` out-parameter.
/// `mesh_string_free(NULL)` does nothing.
///
/// Thread-safety: any thread, once no other thread uses the string.
#[no_mangle]
pub unsafe extern "C" fn mesh_string_free(s: *mut c_char) {
    guard_void(|| {
        if !s.is_null() {
            // SAFETY: a non-NULL string came from `CString::into_raw` in `args::Out` and, by
            // contract, is freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    });
}

pub(crate) fn to_c_string(s: String) -> CString {
    c_string_lossy(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_an_error() {
        let mut err: *mut mesh_error = std::ptr::null_mut();
        let status = guard(&mut err, || panic!("boom"));
        assert_eq!(status, mesh_status::MESH_STATUS_PANIC);
        // SAFETY: the error `guard` just wrote.
        let e = unsafe { Box::from_raw(err) };
        assert!(e.message.to_str().unwrap().contains("boom"));
        guard_void(|| panic!("swallowed"));
    }

    #[test]
    fn each_error_kind_has_its_own_status() {
        let kinds = [
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::PermissionDenied,
            ErrorKind::Store,
            ErrorKind::Transport,
            ErrorKind::Closed,
            ErrorKind::Internal,
            ErrorKind::Offline,
            ErrorKind::Unauthorized,
            ErrorKind::Revoked,
            ErrorKind::Protocol,
            ErrorKind::Quota,
            ErrorKind::RateLimited,
            ErrorKind::Conflict,
            ErrorKind::Locked,
            ErrorKind::Mismatch,
        ];
        let statuses: std::collections::HashSet<i32> =
            kinds.iter().map(|k| status_of(*k) as i32).collect();
        assert_eq!(statuses.len(), kinds.len(), "two kinds share a status");
        for k in kinds {
            let s = status_of(k) as i32;
            // Every status has its name, and names follow the kind.
            let name = unsafe { std::ffi::CStr::from_ptr(mesh_status_name(s)) }
                .to_str()
                .unwrap();
            assert_ne!(name, "MESH_STATUS_UNKNOWN", "{k:?}");
        }
        assert_eq!(status_of(ErrorKind::Revoked), MESH_STATUS_REVOKED);
        assert_eq!(status_of(ErrorKind::Offline), MESH_STATUS_OFFLINE);
        assert_eq!(status_of(ErrorKind::Unauthorized), MESH_STATUS_UNAUTHORIZED);
    }

    #[test]
    fn messages_with_nul_bytes_survive() {
        assert_eq!(c_string_lossy("a\0b".into()).to_str().unwrap(), "ab");
    }
}
