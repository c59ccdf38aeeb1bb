//! Every exported function, called through its C signature: success paths, NULLs, invalid
//! UTF-8, invalid JSON, use after close, callbacks from the runtime's threads.

#![allow(unsafe_code)] // calling the C ABI is what this test is for
#![allow(missing_docs)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mesh_ffi::mesh_status::*;
use mesh_ffi::*;

const INVALID_UTF8: &[u8] = b"\xff\xfe\0";

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn bad_utf8() -> *const c_char {
    INVALID_UTF8.as_ptr().cast()
}

/// Takes a library string: copies it and frees it.
fn take(p: *mut c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: a string just returned by the library.
    let s = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
    // SAFETY: freed once.
    unsafe { mesh_string_free(p) };
    s
}

/// Takes an error: its status and message, then frees it.
fn take_err(e: *mut mesh_error) -> (mesh_status, String) {
    assert!(!e.is_null(), "no error object");
    // SAFETY: an error just returned by the library; freed once.
    unsafe {
        let status = mesh_error_status(e);
        let msg = CStr::from_ptr(mesh_error_message(e))
            .to_str()
            .unwrap()
            .to_owned();
        mesh_error_free(e);
        (status, msg)
    }
}

/// Calls `f(&mut out, &mut err)`; checks the status; on failure checks that `out` was not
/// written and that the error carries the same status.
fn expect<T: Copy + PartialEq + std::fmt::Debug>(
    want: mesh_status,
    sentinel: T,
    f: impl FnOnce(*mut T, *mut *mut mesh_error) -> mesh_status,
) -> T {
    let mut out = sentinel;
    let mut err: *mut mesh_error = null_mut();
    let got = f(&mut out, &mut err);
    if got == MESH_STATUS_OK {
        assert!(err.is_null());
    } else {
        let (status, msg) = take_err(err);
        assert_eq!(status, got, "{msg}");
        assert_eq!(out, sentinel, "out-parameter written on failure");
    }
    assert_eq!(got, want, "unexpected status");
    out
}

fn json_of(p: *mut c_char) -> serde_json::Value {
    serde_json::from_str(&take(p)).unwrap()
}

struct World {
    hub: *mut mesh_hub,
}

impl World {
    fn new() -> Self {
        let hub = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_hub_new(o, e)
        });
        World { hub }
    }

    fn open(&self, user: &str, device: &str) -> *mut mesh_client {
        let config = cs(&format!(
            r#"{{"user": "{user}", "device": "{device}", "device_name": "{device} of {user}",
                 "remotes": [{{"name": "hub", "in_process": true}}], "sync": {{"auto": false}}}}"#
        ));
        expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_open(config.as_ptr(), self.hub, o, e)
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        unsafe { mesh_hub_free(self.hub) };
    }
}

fn sync(c: *const mesh_client) -> serde_json::Value {
    json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_sync_now(c, o, e)
    }))
}

fn folder_with_feed(c: *const mesh_client) -> CString {
    let id = take(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_create_folder(c, cs("Groceries").as_ptr(), cs("app/todo").as_ptr(), o, e)
    }));
    let f = cs(&id);
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_create_feed(c, f.as_ptr(), cs("todos").as_ptr(), cs("To do").as_ptr(), e)
    });
    f
}

#[test]
fn statics_and_null_frees() {
    let v = unsafe { CStr::from_ptr(mesh_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    for (n, name) in [
        (0, "MESH_STATUS_OK"),
        (5, "MESH_STATUS_NOT_FOUND"),
        (14, "MESH_STATUS_INTERNAL"),
        (-1, "MESH_STATUS_UNKNOWN"),
        (99, "MESH_STATUS_UNKNOWN"),
    ] {
        assert_eq!(
            unsafe { CStr::from_ptr(mesh_status_name(n)) }
                .to_str()
                .unwrap(),
            name
        );
    }
    assert_eq!(MESH_STATUS_OK as i32, 0);
    assert_eq!(MESH_STATUS_PANIC as i32, 13);
    unsafe {
        assert_eq!(mesh_error_status(null()), MESH_STATUS_NULL_ARGUMENT);
        assert_eq!(CStr::from_ptr(mesh_error_message(null())).to_bytes(), b"");
        mesh_error_free(null_mut());
        mesh_string_free(null_mut());
        mesh_hub_free(null_mut());
        mesh_client_close(null());
        mesh_client_free(null_mut());
        mesh_subscription_free(null_mut());
    }
    // Without an error out-parameter, a failure still gives its status.
    assert_eq!(
        unsafe { mesh_hub_new(null_mut(), null_mut()) },
        MESH_STATUS_NULL_ARGUMENT
    );
}

#[test]
fn open_refuses_bad_configurations() {
    let w = World::new();
    let open = |config: *const c_char, hub: *const mesh_hub, want| {
        expect(want, null_mut(), |o, e| unsafe {
            mesh_client_open(config, hub, o, e)
        });
    };
    open(null(), w.hub, MESH_STATUS_NULL_ARGUMENT);
    open(bad_utf8(), w.hub, MESH_STATUS_INVALID_UTF8);
    open(cs("{not json").as_ptr(), w.hub, MESH_STATUS_INVALID_JSON);
    open(
        cs(r#"{"user": "ann"}"#).as_ptr(),
        w.hub,
        MESH_STATUS_INVALID_JSON,
    );
    open(
        cs(r#"{"user": "ann", "device": "d", "colour": 1}"#).as_ptr(),
        w.hub,
        MESH_STATUS_INVALID_JSON,
    );
    open(
        cs(r#"{"user": "", "device": "d"}"#).as_ptr(),
        w.hub,
        MESH_STATUS_INVALID_INPUT,
    );
    open(
        cs(r#"{"user": "ann", "device": "d", "remotes": [{"name": "hub", "in_process": true}]}"#)
            .as_ptr(),
        null(),
        MESH_STATUS_NULL_ARGUMENT,
    );
    open(
        cs(r#"{"user": "ann", "device": "d", "remotes": [{"name": "hub"}]}"#).as_ptr(),
        null(),
        MESH_STATUS_INVALID_JSON,
    );
    // A hub URL needs a token; with one, the client opens (its engine then finds nobody
    // listening on port 1 and retries in the background).
    open(cs(r#"{"user": "ann", "device": "d", "remotes": [{"name": "cloud", "url": "http://127.0.0.1:1/"}]}"#).as_ptr(), null(), MESH_STATUS_INVALID_INPUT);
    open(cs(r#"{"user": "ann", "device": "d", "remotes": [{"name": "cloud", "url": "not a url", "token": "t"}]}"#).as_ptr(), null(), MESH_STATUS_INVALID_INPUT);
    let config = cs(
        r#"{"user": "ann", "device": "d", "remotes": [{"name": "cloud", "url": "http://127.0.0.1:1/", "token": "t"}]}"#,
    );
    let c = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_open(config.as_ptr(), null(), o, e)
    });
    assert!(!c.is_null());
    // SAFETY: `c` came from a successful open and is freed once.
    unsafe { mesh_client_free(c) };
    let config = cs(r#"{"user": "ann", "device": "d"}"#);
    assert_eq!(
        unsafe { mesh_client_open(config.as_ptr(), null(), null_mut(), null_mut()) },
        MESH_STATUS_NULL_ARGUMENT
    );
    // A SQLite store at a path, no remotes, no hub.
    let dir = tempfile::tempdir().unwrap();
    let config = cs(
        &serde_json::json!({"user": "ann", "device": "d", "store_path": dir.path().join("a.db")})
            .to_string(),
    );
    let c = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_open(config.as_ptr(), null(), o, e)
    });
    assert_eq!(sync(c), serde_json::json!([]));
    unsafe { mesh_client_free(c) };
    assert!(dir.path().join("a.db").exists());
}

#[test]
fn the_whole_client_through_the_abi() {
    let w = World::new();
    let ann = w.open("ann", "laptop");
    let bob = w.open("bob", "phone");
    let carl = w.open("carl", "tablet");

    // Devices.
    let devices = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_devices(ann, o, e)
    }));
    assert_eq!(devices[0]["name"], "laptop of ann");
    let d = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_rename_device(ann, cs("Work laptop").as_ptr(), o, e)
    }));
    assert_eq!(d["name"], "Work laptop");
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_rename_device(ann, cs("Laptop").as_ptr(), null_mut(), e)
    });

    // Folders and feeds.
    let f = folder_with_feed(ann);
    let folders = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_folders(ann, o, e)
    }));
    assert_eq!(folders[0]["id"].as_str().unwrap(), f.to_str().unwrap());
    let folder = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_folder(ann, f.as_ptr(), o, e)
    }));
    assert_eq!(folder["name"], "Groceries");
    let feeds = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_feeds(ann, f.as_ptr(), o, e)
    }));
    assert_eq!(feeds[0]["name"], "todos");
    expect(MESH_STATUS_ALREADY_EXISTS, (), |_, e| unsafe {
        mesh_client_create_feed(
            ann,
            f.as_ptr(),
            cs("todos").as_ptr(),
            cs("again").as_ptr(),
            e,
        )
    });
    expect(MESH_STATUS_INVALID_INPUT, null_mut(), |o, e| unsafe {
        mesh_client_folder(ann, cs("").as_ptr(), o, e)
    });

    // Entries.
    let todos = cs("todos");
    let draft = cs(r#"{"title": "Buy milk", "content": {"done": false}}"#);
    let e1 = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_put(ann, f.as_ptr(), todos.as_ptr(), draft.as_ptr(), o, e)
    }));
    let id1 = cs(e1["sync"]["id"].as_str().unwrap());
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_put(
            ann,
            f.as_ptr(),
            todos.as_ptr(),
            draft.as_ptr(),
            null_mut(),
            e,
        )
    });
    let bread = cs(r#"{"title": "Buy bread", "content": {"done": false}}"#);
    let e2 = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_put_with_id(
            ann,
            f.as_ptr(),
            todos.as_ptr(),
            cs("bread").as_ptr(),
            bread.as_ptr(),
            o,
            e,
        )
    }));
    assert_eq!(e2["content"]["title"], "Buy bread");
    let got = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_get(ann, f.as_ptr(), todos.as_ptr(), id1.as_ptr(), o, e)
    }));
    assert_eq!(got["content"]["content"]["done"], false);
    expect(MESH_STATUS_INVALID_JSON, null_mut(), |o, e| unsafe {
        mesh_client_put(
            ann,
            f.as_ptr(),
            todos.as_ptr(),
            cs("{\"title\": 1}").as_ptr(),
            o,
            e,
        )
    });
    expect(MESH_STATUS_INVALID_JSON, null_mut(), |o, e| unsafe {
        mesh_client_put(ann, f.as_ptr(), todos.as_ptr(), cs("[").as_ptr(), o, e)
    });
    expect(MESH_STATUS_INVALID_UTF8, null_mut(), |o, e| unsafe {
        mesh_client_put(ann, f.as_ptr(), todos.as_ptr(), bad_utf8(), o, e)
    });
    expect(MESH_STATUS_INVALID_UTF8, null_mut(), |o, e| unsafe {
        mesh_client_get(ann, f.as_ptr(), bad_utf8(), id1.as_ptr(), o, e)
    });
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_delete(ann, f.as_ptr(), todos.as_ptr(), id1.as_ptr(), e)
    });
    expect(MESH_STATUS_NOT_FOUND, null_mut(), |o, e| unsafe {
        mesh_client_get(ann, f.as_ptr(), todos.as_ptr(), id1.as_ptr(), o, e)
    });
    expect(MESH_STATUS_NOT_FOUND, (), |_, e| unsafe {
        mesh_client_delete(ann, f.as_ptr(), todos.as_ptr(), cs("nothing").as_ptr(), e)
    });
    let all = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_query(ann, f.as_ptr(), todos.as_ptr(), null(), o, e)
    }));
    assert_eq!(all.as_array().unwrap().len(), 2);
    let q = cs(r#"{"top": 1}"#);
    let one = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_query(ann, f.as_ptr(), todos.as_ptr(), q.as_ptr(), o, e)
    }));
    assert_eq!(one.as_array().unwrap().len(), 1);
    expect(MESH_STATUS_INVALID_JSON, null_mut(), |o, e| unsafe {
        mesh_client_query(
            ann,
            f.as_ptr(),
            todos.as_ptr(),
            cs(r#"{"top": "x"}"#).as_ptr(),
            o,
            e,
        )
    });

    // Members: invite, invitations, accept, decline, roles, removal.
    expect(MESH_STATUS_INVALID_INPUT, (), |_, e| unsafe {
        mesh_client_invite(
            ann,
            f.as_ptr(),
            cs("bob").as_ptr(),
            cs("boss").as_ptr(),
            null_mut(),
            e,
        )
    });
    let m = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_invite(
            ann,
            f.as_ptr(),
            cs("bob").as_ptr(),
            cs("author").as_ptr(),
            o,
            e,
        )
    }));
    assert_eq!(m["state"], "invited");
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_invite(
            ann,
            f.as_ptr(),
            cs("carl").as_ptr(),
            cs("reader").as_ptr(),
            null_mut(),
            e,
        )
    });
    sync(ann);
    sync(bob);
    sync(carl);
    let inv = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_invitations(bob, o, e)
    }));
    assert_eq!(inv[0]["folder"].as_str().unwrap(), f.to_str().unwrap());
    let m = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_accept(bob, f.as_ptr(), o, e)
    }));
    assert_eq!(m["state"], "active");
    expect(MESH_STATUS_NOT_FOUND, (), |_, e| unsafe {
        mesh_client_accept(bob, f.as_ptr(), null_mut(), e)
    });
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_decline(carl, f.as_ptr(), e)
    });
    expect(MESH_STATUS_NOT_FOUND, (), |_, e| unsafe {
        mesh_client_decline(carl, f.as_ptr(), e)
    });
    sync(bob);
    sync(carl);
    sync(ann);
    let members = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_members(ann, f.as_ptr(), o, e)
    }));
    assert_eq!(members.as_array().unwrap().len(), 3);
    expect(MESH_STATUS_PERMISSION_DENIED, (), |_, e| unsafe {
        mesh_client_set_role(
            bob,
            f.as_ptr(),
            cs("bob").as_ptr(),
            cs("owner").as_ptr(),
            null_mut(),
            e,
        )
    });
    let m = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_set_role(
            ann,
            f.as_ptr(),
            cs("bob").as_ptr(),
            cs("full").as_ptr(),
            o,
            e,
        )
    }));
    assert_eq!(m["role"], "full");
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_set_role(
            ann,
            f.as_ptr(),
            cs("bob").as_ptr(),
            cs("author").as_ptr(),
            null_mut(),
            e,
        )
    });
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_remove_member(ann, f.as_ptr(), cs("carl").as_ptr(), e)
    });
    expect(MESH_STATUS_PERMISSION_DENIED, (), |_, e| unsafe {
        mesh_client_remove_member(ann, f.as_ptr(), cs("ann").as_ptr(), e)
    });

    // Sync carries Bob's writes to Ann.
    sync(ann);
    sync(bob);
    let seen = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_query(bob, f.as_ptr(), todos.as_ptr(), null(), o, e)
    }));
    assert_eq!(seen.as_array().unwrap().len(), 2);
    expect(MESH_STATUS_PERMISSION_DENIED, (), |_, e| unsafe {
        mesh_client_put_with_id(
            bob,
            f.as_ptr(),
            todos.as_ptr(),
            cs("bread").as_ptr(),
            bread.as_ptr(),
            null_mut(),
            e,
        )
    });
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_put_with_id(
            bob,
            f.as_ptr(),
            todos.as_ptr(),
            cs("eggs").as_ptr(),
            draft.as_ptr(),
            null_mut(),
            e,
        )
    });
    sync(bob);
    let report = sync(ann);
    assert_eq!(report[0]["remote"], "hub");
    assert!(report[0]["received"].as_u64().unwrap() >= 1, "{report}");
    expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_get(ann, f.as_ptr(), todos.as_ptr(), cs("eggs").as_ptr(), o, e)
    });

    unsafe {
        mesh_client_free(ann);
        mesh_client_free(bob);
        mesh_client_free(carl);
    }
}

#[test]
fn conflicts_list_and_resolve() {
    let w = World::new();
    let laptop = w.open("ann", "laptop");
    let phone = w.open("ann", "phone");
    let f = folder_with_feed(laptop);
    let todos = cs("todos");
    let v1 = cs(r#"{"title": "Milk", "content": {"n": 1}}"#);
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_put_with_id(
            laptop,
            f.as_ptr(),
            todos.as_ptr(),
            cs("milk").as_ptr(),
            v1.as_ptr(),
            null_mut(),
            e,
        )
    });
    sync(laptop);
    sync(phone);
    // Both devices change the entry before syncing: a conflict, resolved three ways.
    let mut n = 1;
    let resolutions = [
        r#"{"write": {"title": "Milk", "content": {"n": 100}}}"#,
        r#"{"pick": 1}"#,
        r#""delete""#,
    ];
    for (round, resolution) in resolutions.into_iter().enumerate() {
        for c in [laptop, phone] {
            n += 1;
            let v = cs(&format!(r#"{{"title": "Milk", "content": {{"n": {n}}}}}"#));
            expect(MESH_STATUS_OK, (), |_, e| unsafe {
                mesh_client_put_with_id(
                    c,
                    f.as_ptr(),
                    todos.as_ptr(),
                    cs("milk").as_ptr(),
                    v.as_ptr(),
                    null_mut(),
                    e,
                )
            });
        }
        sync(laptop);
        sync(phone);
        sync(laptop);
        let conflicts = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_conflicts(laptop, f.as_ptr(), o, e)
        }));
        assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");
        assert_eq!(conflicts[0]["feed"], "todos");
        if round == 0 {
            for bad in [r#"{"pick": "x"}"#, r#""maybe""#, "{"] {
                expect(MESH_STATUS_INVALID_JSON, null_mut(), |o, e| unsafe {
                    mesh_client_resolve(
                        laptop,
                        f.as_ptr(),
                        todos.as_ptr(),
                        cs("milk").as_ptr(),
                        cs(bad).as_ptr(),
                        o,
                        e,
                    )
                });
            }
        }
        let r = cs(resolution);
        let e = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_resolve(
                laptop,
                f.as_ptr(),
                todos.as_ptr(),
                cs("milk").as_ptr(),
                r.as_ptr(),
                o,
                e,
            )
        }));
        if round == 0 {
            assert_eq!(e["content"]["content"]["n"], 100);
        }
        let none = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_conflicts(laptop, f.as_ptr(), o, e)
        }));
        assert_eq!(none, serde_json::json!([]));
        sync(laptop);
        sync(phone);
        if round == 2 {
            expect(MESH_STATUS_NOT_FOUND, null_mut(), |o, e| unsafe {
                mesh_client_get(phone, f.as_ptr(), todos.as_ptr(), cs("milk").as_ptr(), o, e)
            });
        }
    }
    unsafe {
        mesh_client_free(laptop);
        mesh_client_free(phone);
    }
}

/// Every client function with a NULL client, and with NULL required arguments.
#[test]
fn a_bad_folder_kind_is_invalid_input_and_creates_nothing() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    for bad in ["my files", "app/", "", "a//b"] {
        expect(MESH_STATUS_INVALID_INPUT, null_mut(), |o, e| unsafe {
            mesh_client_create_folder(c, cs("F").as_ptr(), cs(bad).as_ptr(), o, e)
        });
    }
    let mut err = null_mut();
    let got = unsafe {
        mesh_client_create_folder(
            c,
            cs("F").as_ptr(),
            cs("a b").as_ptr(),
            &mut null_mut(),
            &mut err,
        )
    };
    let (status, message) = take_err(err);
    assert_eq!((got, status), (MESH_STATUS_INVALID_INPUT, got));
    assert!(message.contains("folder kind"), "{message}");
    let folders = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_folders(c, o, e)
    }));
    assert_eq!(folders, serde_json::json!([]));
    for (kind, n) in [("files", 1), ("acme/ledger.v2", 2)] {
        expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_create_folder(c, cs(kind).as_ptr(), cs(kind).as_ptr(), o, e)
        });
        let folders = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_folders(c, o, e)
        }));
        assert_eq!(folders.as_array().unwrap().len(), n);
        assert!(folders
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == kind));
    }
    unsafe { mesh_client_free(c) };
}

#[test]
fn an_invitation_the_hub_refuses_is_a_refused_event_and_is_withdrawn() {
    let w = World::new();
    for user in ["ann", "bob"] {
        expect(MESH_STATUS_OK, (), |_, e| unsafe {
            mesh_hub_add_user(w.hub, cs(user).as_ptr(), e)
        });
    }
    expect(MESH_STATUS_INVALID_INPUT, (), |_, e| unsafe {
        mesh_hub_add_user(w.hub, cs("").as_ptr(), e)
    });
    unsafe {
        let n = MESH_STATUS_NULL_ARGUMENT;
        assert_eq!(mesh_hub_add_user(null(), cs("x").as_ptr(), null_mut()), n);
        assert_eq!(mesh_hub_add_user(w.hub, null(), null_mut()), n);
    }
    let c = w.open("ann", "laptop");
    let f = folder_with_feed(c);
    for user in ["nobody", "bob"] {
        expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_invite(
                c,
                f.as_ptr(),
                cs(user).as_ptr(),
                cs("reader").as_ptr(),
                o,
                e,
            )
        });
    }
    sync(c);
    // At most 1,000 events, each awaited at most 5 s: the refusal is among them.
    let refused = (0..1000)
        .map(|_| {
            json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
                mesh_client_poll_event(c, 5000, o, e)
            }))
        })
        .find(|ev| ev["type"] == "refused")
        .expect("a refused event");
    assert_eq!(refused["error_kind"], "not_found", "{refused}");
    assert_eq!(refused["status"], MESH_STATUS_NOT_FOUND as i32);
    assert_eq!(
        (&refused["feed"], &refused["id"]),
        (&"members".into(), &"nobody".into())
    );
    let members = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_members(c, f.as_ptr(), o, e)
    }));
    let mut users: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["ann", "bob"]);
    unsafe { mesh_client_free(c) };
}

#[test]
fn nulls_give_a_status() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    let f = folder_with_feed(c);
    let (x, t) = (cs("x"), cs("todos"));
    let n = MESH_STATUS_NULL_ARGUMENT;
    let mut out: *mut c_char = null_mut();
    let o = &mut out as *mut *mut c_char;
    for client in [null(), c as *const mesh_client] {
        let fo = if client.is_null() { f.as_ptr() } else { null() };
        unsafe {
            assert_eq!(
                mesh_client_devices(
                    client,
                    if client.is_null() { o } else { null_mut() },
                    null_mut()
                ),
                n
            );
            assert_eq!(mesh_client_rename_device(client, null(), o, null_mut()), n);
            assert_eq!(
                mesh_client_create_folder(client, x.as_ptr(), null(), o, null_mut()),
                n
            );
            assert_eq!(
                mesh_client_folders(
                    client,
                    if client.is_null() { o } else { null_mut() },
                    null_mut()
                ),
                n
            );
            assert_eq!(mesh_client_folder(client, fo, o, null_mut()), n);
            assert_eq!(
                mesh_client_create_feed(client, fo, t.as_ptr(), x.as_ptr(), null_mut()),
                n
            );
            assert_eq!(mesh_client_feeds(client, fo, o, null_mut()), n);
            assert_eq!(
                mesh_client_put(client, f.as_ptr(), t.as_ptr(), null(), o, null_mut()),
                n
            );
            assert_eq!(
                mesh_client_put_with_id(
                    client,
                    f.as_ptr(),
                    t.as_ptr(),
                    null(),
                    x.as_ptr(),
                    o,
                    null_mut()
                ),
                n
            );
            assert_eq!(
                mesh_client_get(
                    client,
                    f.as_ptr(),
                    t.as_ptr(),
                    x.as_ptr(),
                    if client.is_null() { o } else { null_mut() },
                    null_mut()
                ),
                n
            );
            assert_eq!(
                mesh_client_delete(client, f.as_ptr(), null(), x.as_ptr(), null_mut()),
                n
            );
            assert_eq!(
                mesh_client_query(
                    client,
                    f.as_ptr(),
                    t.as_ptr(),
                    null(),
                    if client.is_null() { o } else { null_mut() },
                    null_mut()
                ),
                n
            );
            assert_eq!(mesh_client_members(client, fo, o, null_mut()), n);
            assert_eq!(
                mesh_client_invite(client, f.as_ptr(), x.as_ptr(), null(), o, null_mut()),
                n
            );
            assert_eq!(
                mesh_client_invitations(
                    client,
                    if client.is_null() { o } else { null_mut() },
                    null_mut()
                ),
                n
            );
            assert_eq!(mesh_client_accept(client, fo, o, null_mut()), n);
            assert_eq!(mesh_client_decline(client, fo, null_mut()), n);
            assert_eq!(
                mesh_client_set_role(client, f.as_ptr(), null(), x.as_ptr(), o, null_mut()),
                n
            );
            assert_eq!(
                mesh_client_remove_member(client, f.as_ptr(), null(), null_mut()),
                n
            );
            assert_eq!(mesh_client_conflicts(client, fo, o, null_mut()), n);
            assert_eq!(
                mesh_client_resolve(
                    client,
                    f.as_ptr(),
                    t.as_ptr(),
                    x.as_ptr(),
                    null(),
                    o,
                    null_mut()
                ),
                n
            );
            assert_eq!(
                mesh_client_poll_event(
                    client,
                    0,
                    if client.is_null() { o } else { null_mut() },
                    null_mut()
                ),
                n
            );
            assert_eq!(
                mesh_client_subscribe(
                    client,
                    null(),
                    null(),
                    None,
                    null_mut(),
                    None,
                    null_mut(),
                    null_mut()
                ),
                n
            );
            if client.is_null() {
                assert_eq!(mesh_client_sync_now(client, o, null_mut()), n);
            }
            // Peers: a NULL address, configuration or hub name is refused before any socket.
            assert_eq!(
                mesh_client_listen_peers(client, null(), x.as_ptr(), o, null_mut()),
                n
            );
            assert_eq!(
                mesh_client_add_peer(client, x.as_ptr(), null(), x.as_ptr(), null_mut()),
                n
            );
            assert_eq!(
                mesh_client_discover_peers(client, null(), null(), x.as_ptr(), null_mut()),
                n
            );
            let mdns = cs(r#"{"interfaces": ["127.0.0.1"], "port": 45353}"#);
            assert_eq!(
                mesh_client_discover_peers(client, mdns.as_ptr(), null(), null(), null_mut()),
                n
            );
        }
    }
    assert!(out.is_null(), "an out-parameter was written on failure");
    unsafe { mesh_client_free(c) };
}

#[test]
fn use_after_close() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    let f = folder_with_feed(c);
    let hits = Arc::new(AtomicUsize::new(0));
    let sub = subscribe(c, &hits, null());
    unsafe {
        mesh_client_close(c);
        mesh_client_close(c); // idempotent
    }
    let (x, t) = (cs("x"), cs("todos"));
    let closed = MESH_STATUS_CLOSED;
    let mut out: *mut c_char = null_mut();
    let o = &mut out as *mut *mut c_char;
    unsafe {
        assert_eq!(mesh_client_devices(c, o, null_mut()), closed);
        assert_eq!(mesh_client_folders(c, o, null_mut()), closed);
        assert_eq!(
            mesh_client_put_with_id(
                c,
                f.as_ptr(),
                t.as_ptr(),
                x.as_ptr(),
                cs(r#"{"title":"t","content":1}"#).as_ptr(),
                o,
                null_mut()
            ),
            closed
        );
        assert_eq!(
            mesh_client_get(c, f.as_ptr(), t.as_ptr(), x.as_ptr(), o, null_mut()),
            closed
        );
        assert_eq!(mesh_client_sync_now(c, o, null_mut()), closed);
        assert_eq!(mesh_client_poll_event(c, 10, o, null_mut()), closed);
        assert_eq!(
            mesh_client_subscribe(
                c,
                null(),
                null(),
                Some(count_cb),
                null_mut(),
                None,
                &mut null_mut(),
                null_mut()
            ),
            closed
        );
    }
    assert!(out.is_null());
    let mut err = null_mut();
    assert_eq!(unsafe { mesh_client_folders(c, o, &mut err) }, closed);
    assert_eq!(take_err(err).0, closed);
    unsafe {
        mesh_client_free(c);
        // A subscription outlives its client; freeing it afterwards is fine.
        mesh_subscription_free(sub);
    }
}

struct Recorder {
    hits: Arc<AtomicUsize>,
    threads: Mutex<Vec<String>>,
    finalized: AtomicUsize,
}

unsafe extern "C" fn count_cb(user_data: *mut c_void, event: *const c_char) {
    // SAFETY: the test registers a live `Recorder` (or NULL) as user data.
    let Some(r) = (unsafe { user_data.cast::<Recorder>().as_ref() }) else {
        return;
    };
    let json = unsafe { CStr::from_ptr(event) }.to_str().unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(json).is_ok());
    r.threads
        .lock()
        .unwrap()
        .push(std::thread::current().name().unwrap_or("?").to_owned());
    r.hits.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn finalize_cb(user_data: *mut c_void) {
    // SAFETY: the test's `Recorder`, leaked for it; reclaimed here, the one finalizer call.
    let r = unsafe { Box::from_raw(user_data.cast::<Recorder>()) };
    r.finalized.fetch_add(1, Ordering::SeqCst);
    FINALIZED.fetch_add(1, Ordering::SeqCst);
}

static FINALIZED: AtomicUsize = AtomicUsize::new(0);

fn subscribe(
    c: *const mesh_client,
    hits: &Arc<AtomicUsize>,
    folder: *const c_char,
) -> *mut mesh_subscription {
    let rec = Box::into_raw(Box::new(Recorder {
        hits: hits.clone(),
        threads: Mutex::new(vec![]),
        finalized: AtomicUsize::new(0),
    }));
    expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_subscribe(
            c,
            folder,
            null(),
            Some(count_cb),
            rec.cast(),
            Some(finalize_cb),
            o,
            e,
        )
    })
}

#[test]
fn callbacks_run_on_the_runtime_threads_and_free_cancels() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    let f = folder_with_feed(c);
    let hits = Arc::new(AtomicUsize::new(0));
    let rec = Box::into_raw(Box::new(Recorder {
        hits: hits.clone(),
        threads: Mutex::new(vec![]),
        finalized: AtomicUsize::new(0),
    }));
    let sub = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_subscribe(
            c,
            f.as_ptr(),
            cs("todos").as_ptr(),
            Some(count_cb),
            rec.cast(),
            Some(finalize_cb),
            o,
            e,
        )
    });
    expect(MESH_STATUS_INVALID_INPUT, null_mut(), |o, e| unsafe {
        mesh_client_subscribe(
            c,
            null(),
            cs("todos").as_ptr(),
            Some(count_cb),
            null_mut(),
            None,
            o,
            e,
        )
    });
    expect(MESH_STATUS_INVALID_UTF8, null_mut(), |o, e| unsafe {
        mesh_client_subscribe(
            c,
            bad_utf8(),
            null(),
            Some(count_cb),
            null_mut(),
            None,
            o,
            e,
        )
    });
    let d = cs(r#"{"title": "t", "content": null}"#);
    for i in 0..3 {
        expect(MESH_STATUS_OK, (), |_, e| unsafe {
            mesh_client_put_with_id(
                c,
                f.as_ptr(),
                cs("todos").as_ptr(),
                cs(&format!("e{i}")).as_ptr(),
                d.as_ptr(),
                null_mut(),
                e,
            )
        });
    }
    // Wait for the deliveries through the poll queue's pace (no sleeps: the poll call waits).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while hits.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
        let _ = unsafe { mesh_client_poll_event(c, 50, &mut null_mut(), null_mut()) };
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    // SAFETY: `rec` lives until the finalizer, which has not run.
    let threads = unsafe { &*rec }.threads.lock().unwrap().clone();
    assert!(threads.iter().all(|t| t == "mesh-runtime"), "{threads:?}");
    let before = FINALIZED.load(Ordering::SeqCst);
    unsafe { mesh_subscription_free(sub) };
    assert_eq!(
        FINALIZED.load(Ordering::SeqCst),
        before + 1,
        "finalizer ran once"
    );
    // After free, writes deliver nothing more.
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_put_with_id(
            c,
            f.as_ptr(),
            cs("todos").as_ptr(),
            cs("late").as_ptr(),
            d.as_ptr(),
            null_mut(),
            e,
        )
    });
    let _ = unsafe { mesh_client_poll_event(c, 50, &mut null_mut(), null_mut()) };
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    unsafe { mesh_client_free(c) };
}

/// A callback that frees its own subscription, and calls back into the client.
unsafe extern "C" fn self_freeing_cb(user_data: *mut c_void, _event: *const c_char) {
    let slot = unsafe { &*user_data.cast::<SelfFree>() };
    let mut out = null_mut();
    let status = unsafe { mesh_client_folders(slot.client, &mut out, null_mut()) };
    slot.reentrant_ok
        .store((status == MESH_STATUS_OK) as usize, Ordering::SeqCst);
    unsafe { mesh_string_free(out) };
    let sub = slot.sub.swap(null_mut(), Ordering::SeqCst);
    unsafe { mesh_subscription_free(sub) };
}

struct SelfFree {
    client: *const mesh_client,
    sub: std::sync::atomic::AtomicPtr<mesh_subscription>,
    reentrant_ok: AtomicUsize,
}

#[test]
fn a_callback_may_call_the_client_and_free_itself() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    let slot = Box::new(SelfFree {
        client: c,
        sub: Default::default(),
        reentrant_ok: AtomicUsize::new(2),
    });
    let sub = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_subscribe(
            c,
            null(),
            null(),
            Some(self_freeing_cb),
            (&*slot as *const SelfFree).cast_mut().cast(),
            None,
            o,
            e,
        )
    });
    slot.sub.store(sub, Ordering::SeqCst);
    let f = folder_with_feed(c);
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_put_with_id(
            c,
            f.as_ptr(),
            cs("todos").as_ptr(),
            cs("milk").as_ptr(),
            cs(r#"{"title":"Milk","content":{}}"#).as_ptr(),
            null_mut(),
            e,
        )
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !slot.sub.load(Ordering::SeqCst).is_null() && std::time::Instant::now() < deadline {
        let _ = unsafe { mesh_client_poll_event(c, 50, &mut null_mut(), null_mut()) };
    }
    assert!(
        slot.sub.load(Ordering::SeqCst).is_null(),
        "the callback never ran"
    );
    assert_eq!(slot.reentrant_ok.load(Ordering::SeqCst), 1);
    unsafe { mesh_client_free(c) };
}

#[test]
fn poll_events() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    expect(MESH_STATUS_TIMEOUT, null_mut(), |o, e| unsafe {
        mesh_client_poll_event(c, 0, o, e)
    });
    expect(MESH_STATUS_TIMEOUT, null_mut(), |o, e| unsafe {
        mesh_client_poll_event(c, 20, o, e)
    });
    let f = folder_with_feed(c);
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_put_with_id(
            c,
            f.as_ptr(),
            cs("todos").as_ptr(),
            cs("milk").as_ptr(),
            cs(r#"{"title":"Milk","content":{}}"#).as_ptr(),
            null_mut(),
            e,
        )
    });
    let ev = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_poll_event(c, 1000, o, e)
    }));
    assert_eq!(ev["type"], "entry_changed");
    assert_eq!(ev["id"], "milk");
    assert_eq!(ev["kind"], "added");
    assert_eq!(ev["source"], "local");
    assert_eq!(ev["folder"].as_str().unwrap(), f.to_str().unwrap());
    unsafe { mesh_client_free(c) };
}

#[test]
fn an_unreachable_hub_is_offline_in_sync_now_and_in_events() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = cs(&serde_json::json!({
        "user": "ann", "device": "d",
        "remotes": [{"name": "cloud", "url": format!("http://127.0.0.1:{port}/"), "token": "t"}],
    })
    .to_string());
    let c = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_open(config.as_ptr(), null(), o, e)
    });
    expect(MESH_STATUS_OFFLINE, null_mut(), |o, e| unsafe {
        mesh_client_sync_now(c, o, e)
    });
    let mut seen = None;
    for _ in 0..100 {
        let mut out: *mut c_char = null_mut();
        let s = unsafe { mesh_client_poll_event(c, 5000, &mut out, null_mut()) };
        assert_eq!(s, MESH_STATUS_OK, "an event within 5 s");
        let ev = json_of(out);
        if ev["type"] == "sync_error" {
            seen = Some(ev);
            break;
        }
    }
    let ev = seen.expect("a sync_error event");
    assert_eq!(ev["error_kind"], "offline", "{ev}");
    assert_eq!(ev["status"], MESH_STATUS_OFFLINE as i32, "{ev}");
    assert_eq!(ev["retrying"], true);
    unsafe { mesh_client_free(c) };
}

#[test]
fn close_wakes_a_blocked_poller_at_once_with_closed() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    // Drain the events of opening, so that the poller below blocks.
    loop {
        let mut out: *mut c_char = null_mut();
        if unsafe { mesh_client_poll_event(c, 0, &mut out, null_mut()) } != MESH_STATUS_OK {
            break;
        }
        take(out);
    }
    let client = c as usize;
    let (started, ready) = std::sync::mpsc::channel();
    let poller = std::thread::spawn(move || {
        let c = client as *const mesh_client;
        started.send(()).unwrap();
        let t = std::time::Instant::now();
        let mut out: *mut c_char = null_mut();
        let s = unsafe { mesh_client_poll_event(c, 60_000, &mut out, null_mut()) };
        assert!(out.is_null());
        (s, t.elapsed())
    });
    ready.recv().unwrap();
    unsafe { mesh_client_close(c) };
    let (status, waited) = poller.join().unwrap();
    assert_eq!(status, MESH_STATUS_CLOSED);
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the poller waited {waited:?}"
    );
    unsafe { mesh_client_free(c) };
}

#[test]
fn status_through_the_abi() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    let status = |c| {
        json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
            mesh_client_status(c, o, e)
        }))
    };
    let before = status(c);
    assert_eq!(before[0]["remote"], "hub", "{before}");
    assert!(before[0]["online"].is_null(), "{before}");
    assert!(before[0]["last_sync_ms"].is_null());
    sync(c);
    let after = status(c);
    assert_eq!(after[0]["online"], true, "{after}");
    assert!(after[0]["last_sync_ms"].as_u64().unwrap() > 0);
    assert_eq!(after[0]["pending_up"], 0);
    assert!(after[0]["last_error"].is_null());
    // Each change was an event too.
    let mut seen = false;
    loop {
        let mut out: *mut c_char = null_mut();
        if unsafe { mesh_client_poll_event(c, 0, &mut out, null_mut()) } != MESH_STATUS_OK {
            break;
        }
        let ev = json_of(out);
        if ev["type"] == "status" && ev["online"] == true {
            assert_eq!(ev["remote"], "hub");
            seen = true;
        }
    }
    assert!(seen, "a status event");
    expect(MESH_STATUS_NULL_ARGUMENT, null_mut(), |o, e| unsafe {
        mesh_client_status(null(), o, e)
    });
    unsafe { mesh_client_free(c) };
}

#[test]
fn a_second_client_on_one_store_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let config = cs(&serde_json::json!({
        "user": "ann", "device": "d", "store_path": dir.path().join("a.db"),
    })
    .to_string());
    let c = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_open(config.as_ptr(), null(), o, e)
    });
    expect(MESH_STATUS_LOCKED, null_mut(), |o, e| unsafe {
        mesh_client_open(config.as_ptr(), null(), o, e)
    });
    unsafe { mesh_client_free(c) };
    let c = expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_open(config.as_ptr(), null(), o, e)
    });
    unsafe { mesh_client_free(c) };
}

#[test]
fn clients_are_usable_from_many_threads() {
    let w = World::new();
    let c = w.open("ann", "laptop");
    let f = folder_with_feed(c);
    struct Send(*const mesh_client);
    unsafe impl std::marker::Send for Send {}
    std::thread::scope(|s| {
        for t in 0..4 {
            let (p, f) = (Send(c), f.clone());
            s.spawn(move || {
                let p = p;
                for i in 0..10 {
                    let id = cs(&format!("t{t}-{i}"));
                    assert_eq!(
                        unsafe {
                            mesh_client_put_with_id(
                                p.0,
                                f.as_ptr(),
                                cs("todos").as_ptr(),
                                id.as_ptr(),
                                cs(r#"{"title":"x","content":1}"#).as_ptr(),
                                null_mut(),
                                null_mut(),
                            )
                        },
                        MESH_STATUS_OK
                    );
                }
            });
        }
    });
    let all = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_query(c, f.as_ptr(), cs("todos").as_ptr(), null(), o, e)
    }));
    assert_eq!(all.as_array().unwrap().len(), 40);
    unsafe { mesh_client_free(c) };
}

#[test]
fn folders_of_files_through_the_abi() {
    let w = World::new();
    let laptop = w.open("ann", "laptop");
    let phone = w.open("ann", "phone");
    let f = folder_with_feed(laptop);
    sync(laptop);
    sync(phone);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(da.path().join("hello.txt"), b"hello from C").unwrap();
    let path_a = cs(da.path().to_str().unwrap());
    let path_b = cs(db.path().to_str().unwrap());
    let mapping = json_of(expect(MESH_STATUS_OK, null_mut(), |o, e| unsafe {
        mesh_client_map_folder(laptop, f.as_ptr(), path_a.as_ptr(), o, e)
    }));
    assert_eq!(mapping["device"], "laptop");
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_map_folder(phone, f.as_ptr(), path_b.as_ptr(), null_mut(), e)
    });
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_rescan(laptop, f.as_ptr(), e)
    });
    sync(laptop);
    sync(phone);
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_rescan(phone, f.as_ptr(), e)
    });
    assert_eq!(
        std::fs::read(db.path().join("hello.txt")).unwrap(),
        b"hello from C"
    );
    // The phone's events include the mapping's, as JSON.
    let mut kinds = Vec::new();
    loop {
        let mut out: *mut c_char = null_mut();
        let st = unsafe { mesh_client_poll_event(phone, 0, &mut out, null_mut()) };
        if st != MESH_STATUS_OK {
            break;
        }
        let ev = json_of(out);
        if ev["type"] == "mapping" || ev["type"] == "transfer" {
            kinds.push(format!(
                "{}:{}",
                ev["type"].as_str().unwrap_or(""),
                ev["kind"].as_str().unwrap_or("")
            ));
        }
    }
    assert!(kinds.iter().any(|k| k == "mapping:applied"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.starts_with("transfer")), "{kinds:?}");
    // The laptop's directory goes away: its mapping pauses (a status and an event) and
    // publishes nothing.
    let away = da.path().with_extension("away");
    std::fs::rename(da.path(), &away).unwrap();
    expect(MESH_STATUS_STORE, (), |_, e| unsafe {
        mesh_client_rescan(laptop, f.as_ptr(), e)
    });
    let mut paused = Vec::new();
    loop {
        let mut out: *mut c_char = null_mut();
        let st = unsafe { mesh_client_poll_event(laptop, 0, &mut out, null_mut()) };
        if st != MESH_STATUS_OK {
            break;
        }
        let ev = json_of(out);
        if ev["type"] == "mapping_paused" {
            paused.push(ev["reason"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(paused, vec!["root_missing".to_owned()]);
    std::fs::rename(&away, da.path()).unwrap();
    // Unmapping keeps the files; a rescan then finds no mapping; NULLs give a status.
    expect(MESH_STATUS_OK, (), |_, e| unsafe {
        mesh_client_unmap_folder(phone, f.as_ptr(), e)
    });
    assert!(db.path().join("hello.txt").exists());
    expect(MESH_STATUS_NOT_FOUND, (), |_, e| unsafe {
        mesh_client_rescan(phone, f.as_ptr(), e)
    });
    expect(MESH_STATUS_NULL_ARGUMENT, (), |_, e| unsafe {
        mesh_client_map_folder(phone, f.as_ptr(), null(), null_mut(), e)
    });
    expect(MESH_STATUS_NULL_ARGUMENT, (), |_, e| unsafe {
        mesh_client_map_folder(phone, null(), path_b.as_ptr(), null_mut(), e)
    });
    expect(MESH_STATUS_INVALID_UTF8, (), |_, e| unsafe {
        mesh_client_map_folder(phone, f.as_ptr(), bad_utf8(), null_mut(), e)
    });
    unsafe {
        mesh_client_free(laptop);
        mesh_client_free(phone);
    }
}
