//! Reading C arguments and writing C out-parameters: the only places (with `error.rs` and the
//! handles' `_free`s) where this crate dereferences pointers from C.

use std::ffi::{c_char, CStr};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{mesh_status, to_c_string, Error, Result};

/// A required string argument, borrowed for the call.
pub(crate) fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    opt_str_arg(p, name)?.ok_or_else(|| Error::null(name))
}

/// An optional string argument (NULL gives `None`), borrowed for the call.
pub(crate) fn opt_str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: by the contract of every exported function, a non-NULL string argument points
    // to a NUL-terminated string that stays valid and unchanged for the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map(Some).map_err(|_| {
        Error::new(
            mesh_status::MESH_STATUS_INVALID_UTF8,
            format!("{name} is not valid UTF-8"),
        )
    })
}

/// A required id argument (`FolderId`, `FeedName`, `EntryId`, `UserId`…).
pub(crate) fn id_arg<T>(p: *const c_char, name: &str) -> Result<T>
where
    T: FromStr<Err = mesh_core::CoreError>,
{
    Ok(str_arg(p, name)?.parse::<T>()?)
}

/// A required JSON argument.
pub(crate) fn json_arg<T: DeserializeOwned>(p: *const c_char, name: &str) -> Result<T> {
    let s = str_arg(p, name)?;
    serde_json::from_str(s).map_err(|e| Error::json(name, &e))
}

/// A required handle argument, borrowed for the call.
pub(crate) fn handle_arg<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: by contract a handle argument is NULL or a live handle of this type from this
    // library, not freed during the call.
    unsafe { p.as_ref() }.ok_or_else(|| Error::null(name))
}

/// A required out-parameter, checked before any work is done and written only on success.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    pub fn new(p: *mut T, name: &str) -> Result<Self> {
        if p.is_null() {
            Err(Error::null(name))
        } else {
            Ok(Out(p))
        }
    }

    pub fn write(self, value: T) {
        // SAFETY: checked non-NULL in `new`; by contract it points to writable storage for a
        // `T`. The old value is a plain pointer (nothing to drop), so `write` is right.
        unsafe { self.0.write(value) }
    }
}

impl Out<*mut c_char> {
    /// Writes an owned copy of `s`, freed by the caller with `mesh_string_free`.
    pub fn write_string(self, s: String) {
        self.write(to_c_string(s).into_raw());
    }

    /// Writes `value` as a JSON string.
    pub fn write_json<V: Serialize + ?Sized>(self, value: &V) -> Result<()> {
        let s = serde_json::to_string(value).map_err(|e| {
            Error::new(
                mesh_status::MESH_STATUS_INTERNAL,
                format!("JSON encoding: {e}"),
            )
        })?;
        self.write_string(s);
        Ok(())
    }
}
