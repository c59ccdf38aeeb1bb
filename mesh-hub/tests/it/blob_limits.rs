//! Blobs served in bounded pieces, and the hub's maximum blob size.

use mesh_core::blob::{pack, ChunkHash, Manifest};
use mesh_hub::{Hub, HubConfig};
use reqwest::Method;

use crate::blobs::{noise, obj, pack_of, raw, setup_on, PACK};
use crate::hubs::TestHub;

const HASHES: &str = "application/x-mesh-hashes";

/// Objects larger than a read piece come out whole and exact: as one object, as ranges across
/// piece boundaries, and in a fetched pack; from SQLite and from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_sent_exactly_piece_by_piece() {
    let dir = tempfile::tempdir().unwrap();
    for hub in [
        Hub::builder().data_dir(dir.path()).build().unwrap(),
        Hub::builder().build().unwrap(),
    ] {
        let (hub, ann, bob, carol) = setup_on(TestHub::start(hub).await).await;
        // A 3 MiB object (12 pieces) and a small one.
        let big = obj(&noise(3 << 20 | 123, 7));
        let small = obj(b"small");
        let (s, _, _) = raw(ann
            .req(Method::POST, "/mesh/folders/f1@ann/objects")
            .header("Content-Type", PACK)
            .body(pack_of(&[big.clone(), small.clone()])))
        .await;
        assert_eq!(s, 204);
        let path = format!("/mesh/folders/f1@ann/objects/{}", big.0.hex());
        let (s, _, body) = raw(bob.req(Method::GET, &path)).await;
        assert_eq!(s, 200);
        assert!(body == big.1, "the whole object");
        let (from, to) = ((256 << 10) - 5, (1 << 20) + 77);
        let (s, h, body) = raw(bob
            .req(Method::GET, &path)
            .header("Range", format!("bytes={from}-{to}")))
        .await;
        assert_eq!(s, 206);
        assert_eq!(
            h["content-range"].to_str().unwrap(),
            format!("bytes {from}-{to}/{}", big.1.len())
        );
        assert!(body == big.1[from..=to], "the range");
        // A fetch of both, and of one the folder does not claim, in order.
        let mut hashes = Vec::new();
        for h in [small.0, ChunkHash::of(b"unclaimed"), big.0, small.0] {
            hashes.extend_from_slice(h.as_bytes());
        }
        let (s, _, body) = raw(bob
            .req(Method::POST, "/mesh/folders/f1@ann/objects/fetch")
            .header("Content-Type", HASHES)
            .body(hashes))
        .await;
        assert_eq!(s, 200);
        let got = pack::decode(&body).unwrap();
        assert_eq!(got, vec![small.clone(), big.clone(), small.clone()]);
        // A non-member still gets nothing.
        let (s, _, _) = raw(carol.req(Method::GET, &path)).await;
        assert_eq!(s, 404);
        hub.stop().await;
    }
}

/// A manifest declaring more than the hub's maximum blob size is refused on upload, and a
/// stored one is not served once the limit is lower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_over_the_maximum_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = obj(&noise(200_000, 3));
    // One chunk repeated: a 2 MB blob from 200 KB of data.
    let repeated = Manifest::new(std::iter::repeat_n((chunk.0, 200_000u32), 10)).unwrap();
    let m = obj(&repeated.encode());
    let upload = |ann: &crate::hubs::Rest, objects: Vec<(ChunkHash, Vec<u8>)>| {
        ann.req(Method::POST, "/mesh/folders/f1@ann/objects")
            .header("Content-Type", PACK)
            .body(pack_of(&objects))
    };
    let small = |dir: &std::path::Path| {
        Hub::builder()
            .data_dir(dir)
            .config(HubConfig {
                max_blob: 1_000_000,
                ..HubConfig::default()
            })
            .build()
            .unwrap()
    };
    {
        let (hub, ann, _, _) = setup_on(TestHub::start(small(dir.path())).await).await;
        let (s, _, body) = raw(upload(&ann, vec![chunk.clone(), m.clone()])).await;
        assert_eq!(s, 422);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "blob_too_large", "{v}");
        // Nothing of the refused pack was kept.
        assert!(hub.hub.blobs().get(&chunk.0).unwrap().is_none());
        hub.stop().await;
    }
    // A hub with the default limit takes it …
    let other = tempfile::tempdir().unwrap();
    {
        let hub = TestHub::start(Hub::builder().data_dir(other.path()).build().unwrap()).await;
        let (hub, ann, bob, _) = setup_on(hub).await;
        let (s, _, _) = raw(upload(&ann, vec![chunk.clone(), m.clone()])).await;
        assert_eq!(s, 204);
        let path = format!("/mesh/folders/f1@ann/blobs/{}", m.0.hex());
        let (s, _, body) = raw(bob.req(Method::GET, &path)).await;
        assert_eq!((s, body.len()), (200, 2_000_000));
        hub.stop().await;
    }
    // … and once restarted with a lower one, does not serve it.
    {
        let hub = TestHub::start(small(other.path())).await;
        let bob = crate::hubs::Rest::new(&hub, hub.token("bob", "bob-desk2"));
        let path = format!("/mesh/folders/f1@ann/blobs/{}", m.0.hex());
        let (s, _, body) = raw(bob.req(Method::GET, &path)).await;
        assert_eq!(s, 422, "{}", String::from_utf8_lossy(&body));
        hub.stop().await;
    }
}
