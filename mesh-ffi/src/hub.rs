//! The in-process hub handle.

use std::ffi::c_char;

use ::mesh_client::transport::InProcessHub;

use crate::args::{handle_arg, id_arg, Out};
use crate::error::{guard, guard_void, mesh_error, mesh_status};

/// An in-process hub: a replica in this process that clients opened with it (config remote
/// `{"in_process": true}`) sync through, enforcing the folders' member roles like a real hub.
pub struct mesh_hub {
    pub(crate) hub: InProcessHub,
}

/// Creates an in-process hub with an in-memory store. Free it with `mesh_hub_free`; clients
/// opened with it keep their connection to it after it is freed.
///
/// Thread-safety: may be called from any thread; the hub may be shared by clients on any
/// threads.
#[no_mangle]
pub unsafe extern "C" fn mesh_hub_new(
    out: *mut *mut mesh_hub,
    error: *mut *mut mesh_error,
) -> mesh_status {
    guard(error, || {
        let out = Out::new(out, "out")?;
        out.write(Box::into_raw(Box::new(mesh_hub {
            hub: InProcessHub::new(),
        })));
        Ok(())
    })
}

/// Records that `user` has an account on this hub, as a mesh-hub's administrator does. From
/// the first call on, the hub knows its accounts and refuses invitations of anyone else: the
/// inviting client gets a `refused` event with `error_kind` `not_found` and withdraws its
/// invitation. Before it, anyone may be invited.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_hub_add_user(
    hub: *const mesh_hub,
    user: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    guard(error, || {
        let hub = handle_arg(hub, "hub")?;
        hub.hub.add_user(id_arg(user, "user")?);
        Ok(())
    })
}

/// Frees a hub. `mesh_hub_free(NULL)` does nothing.
///
/// Thread-safety: any thread, once no call that takes this hub is running.
#[no_mangle]
pub unsafe extern "C" fn mesh_hub_free(hub: *mut mesh_hub) {
    guard_void(|| {
        if !hub.is_null() {
            // SAFETY: a non-NULL hub came from `Box::into_raw` in `mesh_hub_new` and, by
            // contract, is freed once.
            drop(unsafe { Box::from_raw(hub) });
        }
    });
}
