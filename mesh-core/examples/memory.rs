//! Heap held by a `Replica<MemoryStore>` per entry, beyond the entries' JSON content.
//!
//! ```text
//! cargo run --release -p mesh-core --example memory
//! ```
//!
//! A counting global allocator tracks the bytes currently allocated (as requested from the
//! allocator; the system allocator's own per-block bookkeeping comes on top). For each content
//! size, 100,000 entries are written to an empty replica with `Replica::create`; then everything
//! but the replica is dropped, and the bytes the replica holds, less the bytes of the entries'
//! canonical JSON text, are divided by the number of entries.

// The workspace denies `unsafe_code`. Implementing `GlobalAlloc` needs `unsafe impl` and
// `unsafe fn`s; they only forward to `std::alloc::System` and update counters, and this is an
// example program, not library code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use mesh_core::model::EntryDraft;
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::MemoryStore;

#[path = "../benches/fixtures/mod.rs"]
#[allow(dead_code)]
mod fixtures;

/// `System`, counting the bytes currently allocated and the number of live blocks.
struct Counting;

/// Bytes requested and not yet freed.
static BYTES: AtomicIsize = AtomicIsize::new(0);
/// The same blocks as glibc's malloc would size them (see [`chunk`]).
static CHUNK_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Blocks not yet freed.
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Live bytes and blocks by requested size below `LARGE`, then by [`class`] of larger block.
static BY_SIZE: [AtomicIsize; INDEX + 1] = [const { AtomicIsize::new(0) }; INDEX + 1];
static BLOCKS_BY_SIZE: [AtomicIsize; INDEX + 1] = [const { AtomicIsize::new(0) }; INDEX + 1];
const LARGE: usize = 4096;

/// Block sizes of the memory store's large blocks (`mesh-core/src/store/memory`): chunks of
/// 1,024 slots of 104 bytes and chunks of 1,024 change-log records of 12 bytes.
const SLOT_CHUNK: usize = 1024 * 104;
const LOG_CHUNK: usize = 1024 * 12;
/// Pseudo-sizes under which the large blocks are counted.
const SLOTS: usize = LARGE + 1;
const LOG: usize = LARGE + 2;
const INDEX: usize = LARGE + 3;

/// Where blocks of `size` bytes are counted: their size, or a class of large blocks.
fn class(size: usize) -> usize {
    match size {
        s if s < LARGE => s,
        SLOT_CHUNK => SLOTS,
        LOG_CHUNK => LOG,
        // The index: 8-byte buckets, a power of two of them.
        s if s.is_power_of_two() => INDEX,
        _ => LARGE,
    }
}

fn count(size: usize, blocks: isize) {
    let slot = class(size);
    BY_SIZE[slot].fetch_add(blocks * size as isize, Ordering::Relaxed);
    BLOCKS_BY_SIZE[slot].fetch_add(blocks, Ordering::Relaxed);
}

/// The size of the block glibc's malloc (64-bit) hands out for a request of `n` bytes: 8 bytes
/// of header, rounded up to 16, at least 32; requests from 128 KiB on are mapped whole pages.
fn chunk(n: usize) -> isize {
    let size = if n >= 128 << 10 {
        (n + 16 + 4095) & !4095
    } else {
        ((n + 8 + 15) & !15).max(32)
    };
    size as isize
}

fn grew(by: isize, chunk_by: isize) {
    let now = BYTES.fetch_add(by, Ordering::Relaxed) + by;
    CHUNK_BYTES.fetch_add(chunk_by, Ordering::Relaxed);
    PEAK.fetch_max(now.max(0) as usize, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size() as isize, chunk(layout.size()));
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            count(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size() as isize, chunk(layout.size()));
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            count(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        CHUNK_BYTES.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(
                new_size as isize - layout.size() as isize,
                chunk(new_size) - chunk(layout.size()),
            );
            count(layout.size(), -1);
            count(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 100_000;

fn by_size() -> Vec<(isize, isize)> {
    BY_SIZE
        .iter()
        .zip(&BLOCKS_BY_SIZE)
        .map(|(b, n)| (b.load(Ordering::Relaxed), n.load(Ordering::Relaxed)))
        .collect()
}

/// The block an `Arc<str>` (or `Arc<RawValue>`, the same layout) of `len` bytes takes: two
/// counts, the text, padded to 8.
fn arc_str(len: usize) -> usize {
    (16 + len + 7) & !7
}

/// What blocks of `size` bytes (or of a [`class`]) are, in this program.
fn label(size: usize, content_len: usize) -> &'static str {
    match size {
        s if s == arc_str(content_len) => "content: Arc<RawValue> (16 B of counts + the JSON text)",
        s if s == arc_str(14) => "entry id: Arc<str> (16 B of counts + 14 B, padded to 8)",
        6..=11 => "title: Box<str>",
        SLOTS => "slots: chunks of 1,024 packed entries of 104 B",
        LOG => "change log: chunks of 1,024 records of 12 B",
        INDEX => "index: 8-byte buckets (32-bit hash + slot number), at most 7/8 full",
        LARGE => "other blocks >= 4 KiB",
        _ => "other",
    }
}

fn held() -> (isize, isize, isize) {
    (
        BYTES.load(Ordering::Relaxed),
        CHUNK_BYTES.load(Ordering::Relaxed),
        BLOCKS.load(Ordering::Relaxed),
    )
}

fn measure(content_len: usize) {
    let feed = fixtures::feed();
    let actor = Actor::new("ann".parse().unwrap(), fixtures::device("device-a"));
    let when = fixtures::at(0);
    let (bytes0, chunks0, blocks0) = held();
    let sizes0 = by_size();
    let mut replica = Replica::new(MemoryStore::new("memory-replica".parse().unwrap()));
    let mut content_bytes = 0;
    let mut title_bytes = 0;
    for i in 0..N {
        let draft = EntryDraft {
            title: format!("item {i}"),
            content: fixtures::content(i, 1, content_len),
            media: None,
        };
        content_bytes += draft.content.len();
        title_bytes += draft.title.len();
        replica
            .create(&feed, fixtures::entry_id(i), draft, &actor, when)
            .unwrap();
    }
    // Only the replica is left (the feed key and actor hold a few shared ids).
    drop(actor);
    let (bytes1, chunks1, blocks1) = held();
    let sizes1 = by_size();
    let replica_bytes = (bytes1 - bytes0) as f64;
    let per_entry = replica_bytes / N as f64;
    let overhead = (replica_bytes - content_bytes as f64) / N as f64;
    let chunk_overhead = ((chunks1 - chunks0) as f64 - content_bytes as f64) / N as f64;
    println!(
        "content {content_len:>4} B: replica holds {:>6.1} MiB = {per_entry:>6.1} B/entry; \
         overhead {overhead:>5.1} B/entry requested, {chunk_overhead:>5.1} B/entry in glibc \
         blocks ({:.2} blocks/entry; includes titles of {:.1} B and ids of 14 B)",
        replica_bytes / (1 << 20) as f64,
        (blocks1 - blocks0) as f64 / N as f64,
        title_bytes as f64 / N as f64,
    );
    let mut rows: Vec<(&str, f64, f64)> = Vec::new();
    for (size, ((b0, n0), (b1, n1))) in sizes0.iter().zip(&sizes1).enumerate() {
        let (bytes, blocks) = ((b1 - b0) as f64 / N as f64, (n1 - n0) as f64 / N as f64);
        if bytes.abs() < 0.05 {
            continue;
        }
        let what = label(size, content_len);
        match rows.iter_mut().find(|r| r.0 == what) {
            Some(r) => {
                r.1 += bytes;
                r.2 += blocks;
            }
            None => rows.push((what, bytes, blocks)),
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (what, bytes, blocks) in rows {
        println!("    {bytes:>7.1} B/entry in {blocks:>5.3} blocks/entry: {what}");
    }
    drop(replica);
}

fn main() {
    for len in [1024, 100] {
        measure(len);
    }
    println!(
        "peak heap {:.1} MiB",
        PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    );
}
