//! The cost of the C ABI: an entry put and an entry get through `mesh_client_put` /
//! `mesh_client_get` against the same `MeshClient` calls made from Rust, in one run.
//!
//! ```text
//! cargo bench -p mesh-ffi --bench ffi
//! ```
//!
//! Both sides use an in-memory store, no remotes, and a client on its own two-worker tokio
//! runtime, called from the benchmark thread (`block_on`), which is how the C ABI runs every
//! call. The difference is the ABI's own work: argument checks, id parsing, JSON decoding of
//! the draft, JSON encoding of the result, and the string handed to and freed by the caller.

#![allow(missing_docs)] // criterion_group! generates an undocumented public function
#![allow(unsafe_code)] // calling the C ABI is what this benchmark measures

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use ::mesh_client::MeshClient;
use criterion::{criterion_group, criterion_main, Criterion};
use mesh_core::id::{EntryId, FeedName, FolderId};
use mesh_core::model::EntryDraft;
use mesh_ffi::mesh_status::MESH_STATUS_OK;
use mesh_ffi::*;

const DRAFT: &str =
    r#"{"title": "Buy milk", "content": {"done": false, "qty": 2, "note": "semi-skimmed"}}"#;

fn rust_side() -> (tokio::runtime::Runtime, MeshClient, FolderId, FeedName) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(
            MeshClient::builder()
                .user("ann".parse().expect("id"))
                .device("laptop".parse().expect("id"))
                .build(),
        )
        .expect("client");
    let folder = rt
        .block_on(client.create_folder("Groceries", "app/todo".parse().unwrap()))
        .expect("folder")
        .id;
    let feed = rt
        .block_on(client.create_feed(&folder, "todos".parse().expect("id"), "To do"))
        .expect("feed");
    (rt, client, folder, feed)
}

fn c_side() -> (*mut mesh_client, CString) {
    let config = CString::new(r#"{"user": "ann", "device": "laptop"}"#).expect("config");
    let mut c = null_mut();
    let mut folder = null_mut();
    // SAFETY: valid arguments; the out-parameters are read only after OK.
    unsafe {
        assert_eq!(
            mesh_client_open(config.as_ptr(), null(), &mut c, null_mut()),
            MESH_STATUS_OK
        );
        assert_eq!(
            mesh_client_create_folder(
                c,
                c"Groceries".as_ptr(),
                c"app/todo".as_ptr(),
                &mut folder,
                null_mut()
            ),
            MESH_STATUS_OK
        );
        let f = CStr::from_ptr(folder).to_owned();
        mesh_string_free(folder);
        assert_eq!(
            mesh_client_create_feed(
                c,
                f.as_ptr(),
                c"todos".as_ptr(),
                c"To do".as_ptr(),
                null_mut()
            ),
            MESH_STATUS_OK
        );
        (c, f)
    }
}

fn bench(c: &mut Criterion) {
    let (rt, client, folder, feed) = rust_side();
    let draft: EntryDraft = serde_json::from_str(DRAFT).expect("draft");
    let (cc, cfolder) = c_side();
    let cdraft = CString::new(DRAFT).expect("draft");

    let mut g = c.benchmark_group("entry_put");
    g.bench_function("rust", |b| {
        b.iter(|| {
            rt.block_on(client.put(&folder, &feed, draft.clone()))
                .expect("put")
        })
    });
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            let mut out = null_mut();
            // SAFETY: valid arguments; the entry string is freed once.
            unsafe {
                let s = mesh_client_put(
                    cc,
                    cfolder.as_ptr(),
                    c"todos".as_ptr(),
                    cdraft.as_ptr(),
                    &mut out,
                    null_mut(),
                );
                assert_eq!(s, MESH_STATUS_OK);
                mesh_string_free(out);
            }
        })
    });
    g.finish();

    let id: EntryId = "milk".parse().expect("id");
    rt.block_on(client.put_with_id(&folder, &feed, id.clone(), draft.clone()))
        .expect("put");
    // SAFETY: valid arguments.
    unsafe {
        let s = mesh_client_put_with_id(
            cc,
            cfolder.as_ptr(),
            c"todos".as_ptr(),
            c"milk".as_ptr(),
            cdraft.as_ptr(),
            null_mut(),
            null_mut(),
        );
        assert_eq!(s, MESH_STATUS_OK);
    }
    let mut g = c.benchmark_group("entry_get");
    g.bench_function("rust", |b| {
        b.iter(|| {
            rt.block_on(client.get(&folder, &feed, &id))
                .expect("get")
                .expect("entry")
        })
    });
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            let mut out = null_mut();
            // SAFETY: valid arguments; the entry string is freed once.
            unsafe {
                let s = mesh_client_get(
                    cc,
                    cfolder.as_ptr(),
                    c"todos".as_ptr(),
                    c"milk".as_ptr(),
                    &mut out,
                    null_mut(),
                );
                assert_eq!(s, MESH_STATUS_OK);
                mesh_string_free(out);
            }
        })
    });
    g.finish();
    // SAFETY: freed once, after its last use.
    unsafe { mesh_client_free(cc) };
}

criterion_group!(benches, bench);
criterion_main!(benches);
