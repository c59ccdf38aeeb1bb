//! The blob endpoints over HTTP: packs in and out, the hashes a folder lacks, single objects and
//! assembled blobs with ranges, member roles, and what is refused.

use futures::StreamExt;
use mesh_core::blob::{chunk_boundaries, pack, ChunkHash, Manifest};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use serde_json::json;

use crate::hubs::{send, Rest, TestHub};

pub(crate) const PACK: &str = "application/x-mesh-pack";
const HASHES: &str = "application/x-mesh-hashes";

/// A hub with folder `f1@ann`: ann owns it, bob reads it, carol is not a member.
async fn setup() -> (TestHub, Rest, Rest, Rest) {
    setup_on(TestHub::memory().await).await
}

/// [`setup`] on a given hub.
pub(crate) async fn setup_on(hub: TestHub) -> (TestHub, Rest, Rest, Rest) {
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let bob = Rest::new(&hub, hub.token("bob", "bob-desk"));
    let carol = Rest::new(&hub, hub.token("carol", "carol-phone"));
    let (s, f) = ann
        .post(
            "/mesh/folders",
            json!({"name": "Files", "kind": "files", "id": "f1@ann"}),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    let (s, _) = ann
        .post(
            "/mesh/folders/f1@ann/members",
            json!({"user": "bob", "role": "reader"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = bob
        .post("/mesh/invitations/f1@ann/accept", json!(null))
        .await;
    assert_eq!(s, 200);
    (hub, ann, bob, carol)
}

/// Deterministic pseudo-random bytes (xorshift), so that chunking finds real boundaries.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

pub(crate) fn obj(data: &[u8]) -> (ChunkHash, Vec<u8>) {
    (ChunkHash::of(data), data.to_vec())
}

pub(crate) fn pack_of(objects: &[(ChunkHash, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (h, d) in objects {
        pack::write_frame(&mut body, h, d);
    }
    body
}

/// Sends a request; the status, headers and raw body.
pub(crate) async fn raw(rb: reqwest::RequestBuilder) -> (u16, HeaderMap, Vec<u8>) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap().to_vec();
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
        assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
    }
    (status, headers, body)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn upload(rest: &Rest, folder: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    send(
        rest.req(Method::POST, &format!("/mesh/folders/{folder}/objects"))
            .header(CONTENT_TYPE, PACK)
            .body(body),
    )
    .await
}

async fn missing(rest: &Rest, folder: &str, hashes: &[ChunkHash]) -> Vec<ChunkHash> {
    let (s, h, body) = raw(rest
        .req(
            Method::POST,
            &format!("/mesh/folders/{folder}/objects/missing"),
        )
        .header(CONTENT_TYPE, HASHES)
        .body(pack::encode_hashes(hashes)))
    .await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), HASHES);
    pack::decode_hashes(&body).unwrap()
}

async fn fetch(rest: &Rest, folder: &str, hashes: &[ChunkHash]) -> (u16, Vec<u8>) {
    let (s, _, body) = raw(rest
        .req(
            Method::POST,
            &format!("/mesh/folders/{folder}/objects/fetch"),
        )
        .header(CONTENT_TYPE, HASHES)
        .body(pack::encode_hashes(hashes)))
    .await;
    (s, body)
}

async fn get_range(rest: &Rest, path: &str, range: Option<&str>) -> (u16, HeaderMap, Vec<u8>) {
    let mut rb = rest.req(Method::GET, path);
    if let Some(r) = range {
        rb = rb.header("range", r);
    }
    raw(rb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_truncated_packs_are_refused_and_nothing_is_stored() {
    let (hub, ann, _, _) = setup().await;
    let good = obj(b"a good object");
    let forged = (ChunkHash::of(b"the name"), b"other bytes".to_vec());
    let (s, e) = upload(&ann, "f1@ann", pack_of(&[good.clone(), forged])).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_blob")), "{e}");
    // A frame cut short, and a frame announcing more than any object may be.
    let whole = pack_of(std::slice::from_ref(&good));
    let (s, e) = upload(&ann, "f1@ann", whole[..whole.len() - 1].to_vec()).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_blob")), "{e}");
    let mut huge = good.0.as_bytes().to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    let (s, e) = upload(&ann, "f1@ann", huge).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_blob")), "{e}");
    // Not a pack at all.
    let (s, e) = send(
        ann.req(Method::POST, "/mesh/folders/f1@ann/objects")
            .header(CONTENT_TYPE, "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    assert_eq!(hub.hub.blobs().usage().unwrap(), (0, 0), "nothing stored");
    assert_eq!(missing(&ann, "f1@ann", &[good.0]).await, vec![good.0]);

    // The good object alone goes in; an empty pack is fine.
    let (s, _) = upload(&ann, "f1@ann", whole).await;
    assert_eq!(s, 204);
    let (s, _) = upload(&ann, "f1@ann", Vec::new()).await;
    assert_eq!(s, 204);
    assert!(missing(&ann, "f1@ann", &[good.0]).await.is_empty());
    assert_eq!(hub.hub.blobs().usage().unwrap().0, 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_query_of_1000_hashes_and_the_limits_of_hash_lists() {
    let (hub, ann, _, _) = setup().await;
    let objects: Vec<_> = (0..1000u32)
        .map(|i| obj(format!("object {i}").as_bytes()))
        .collect();
    let hashes: Vec<ChunkHash> = objects.iter().map(|o| o.0).collect();
    let even: Vec<_> = objects.iter().step_by(2).cloned().collect();
    let (s, _) = upload(&ann, "f1@ann", pack_of(&even)).await;
    assert_eq!(s, 204);
    let odd: Vec<ChunkHash> = hashes.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(missing(&ann, "f1@ann", &hashes).await, odd);
    // Repeats are answered once.
    let twice = [odd[0], odd[0], hashes[0], odd[1]];
    assert_eq!(missing(&ann, "f1@ann", &twice).await, vec![odd[0], odd[1]]);
    assert!(missing(&ann, "f1@ann", &[]).await.is_empty());

    // 65,536 hashes is the most one request may carry.
    let max: Vec<ChunkHash> = (0..65_536u32)
        .map(|i| ChunkHash::of(&i.to_le_bytes()))
        .collect();
    assert_eq!(missing(&ann, "f1@ann", &max).await.len(), 65_536);
    let mut over = pack::encode_hashes(&max);
    over.extend_from_slice(&[0; 32]);
    for path in ["missing", "fetch"] {
        let (s, e) = send(
            ann.req(
                Method::POST,
                &format!("/mesh/folders/f1@ann/objects/{path}"),
            )
            .header(CONTENT_TYPE, HASHES)
            .body(over.clone()),
        )
        .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (413, Some("payload_too_large")),
            "{path}"
        );
        // Not a whole number of hashes.
        let (s, e) = send(
            ann.req(
                Method::POST,
                &format!("/mesh/folders/f1@ann/objects/{path}"),
            )
            .header(CONTENT_TYPE, HASHES)
            .body(vec![0u8; 33]),
        )
        .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("invalid_blob")),
            "{path}"
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_answers_the_claimed_objects_in_order_within_8_mib() {
    let (hub, ann, _, _) = setup().await;
    // 40 objects of 256 KiB: 10 MiB in all.
    let objects: Vec<_> = (0..40u64).map(|i| obj(&noise(256 << 10, i + 1))).collect();
    let hashes: Vec<ChunkHash> = objects.iter().map(|o| o.0).collect();
    for batch in objects.chunks(10) {
        let (s, _) = upload(&ann, "f1@ann", pack_of(batch)).await;
        assert_eq!(s, 204);
    }
    // Unknown hashes are skipped; the answer stops once 8 MiB of objects are in.
    let mut asked = vec![ChunkHash::of(b"unknown")];
    asked.extend_from_slice(&hashes);
    let (s, body) = fetch(&ann, "f1@ann", &asked).await;
    assert_eq!(s, 200);
    let got = pack::decode(&body).unwrap();
    assert_eq!(got.len(), 32, "8 MiB of 256 KiB objects");
    assert_eq!(got[..], objects[..32]);
    let (_, body) = fetch(&ann, "f1@ann", &hashes[32..]).await;
    assert_eq!(pack::decode(&body).unwrap()[..], objects[32..]);
    // Nothing available: an empty pack.
    let (s, body) = fetch(&ann, "f1@ann", &[ChunkHash::of(b"unknown")]).await;
    assert_eq!((s, body.len()), (200, 0));
    // One object larger than the budget still comes (alone).
    let big = obj(&noise(9 << 20, 99));
    let (s, _) = upload(&ann, "f1@ann", pack_of(std::slice::from_ref(&big))).await;
    assert_eq!(s, 204);
    let (_, body) = fetch(&ann, "f1@ann", &[big.0, hashes[0]]).await;
    assert_eq!(pack::decode(&body).unwrap(), vec![big]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_download_only_authors_upload_and_outsiders_see_no_folder() {
    let (hub, ann, bob, carol) = setup().await;
    let o = obj(b"shared object");
    let (s, _) = upload(&ann, "f1@ann", pack_of(std::slice::from_ref(&o))).await;
    assert_eq!(s, 204);
    let hex = o.0.hex();

    // bob (reader): may query and download, not upload.
    assert!(missing(&bob, "f1@ann", &[o.0]).await.is_empty());
    let (s, body) = fetch(&bob, "f1@ann", &[o.0]).await;
    assert_eq!((s, pack::decode(&body).unwrap()), (200, vec![o.clone()]));
    let (s, _, body) = get_range(&bob, &format!("/mesh/folders/f1@ann/objects/{hex}"), None).await;
    assert_eq!((s, body), (200, o.1.clone()));
    let other = obj(b"bob's upload");
    let (s, e) = upload(&bob, "f1@ann", pack_of(std::slice::from_ref(&other))).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("permission_denied")));
    assert_eq!(missing(&ann, "f1@ann", &[other.0]).await, vec![other.0]);

    // carol: every endpoint answers exactly as for a folder that does not exist.
    let hashes = pack::encode_hashes(&[o.0]);
    let pack = pack_of(std::slice::from_ref(&other));
    for (method, tail, body, ct) in [
        (
            Method::POST,
            "objects/missing".to_owned(),
            hashes.clone(),
            HASHES,
        ),
        (
            Method::POST,
            "objects/fetch".to_owned(),
            hashes.clone(),
            HASHES,
        ),
        (Method::POST, "objects".to_owned(), pack.clone(), PACK),
        (Method::GET, format!("objects/{hex}"), Vec::new(), HASHES),
        (Method::GET, format!("blobs/{hex}"), Vec::new(), HASHES),
    ] {
        let mut answers = Vec::new();
        for folder in ["f1@ann", "nope"] {
            let (s, e) = send(
                carol
                    .req(method.clone(), &format!("/mesh/folders/{folder}/{tail}"))
                    .header(CONTENT_TYPE, ct)
                    .body(body.clone()),
            )
            .await;
            assert_eq!(s, 404, "{tail}");
            answers.push(e["message"].as_str().unwrap().replace(folder, "X"));
        }
        assert_eq!(
            answers[0], answers[1],
            "{tail}: the answers tell the folders apart"
        );
    }
    assert_eq!(hub.hub.blobs().usage().unwrap().0, 1);

    // A hash the folder does not claim is a 404 like any unknown one.
    let (s, _) = upload(&ann, "f1@ann", pack.clone()).await;
    assert_eq!(s, 204);
    let (s, _) = ann
        .post("/mesh/folders", json!({"name": "Other", "id": "f2@ann"}))
        .await;
    assert_eq!(s, 201);
    let (s, _, _) = get_range(
        &ann,
        &format!("/mesh/folders/f2@ann/objects/{}", other.0.hex()),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = get_range(&ann, "/mesh/folders/f1@ann/objects/not-a-hash", None).await;
    assert_eq!(s, 404);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_served_with_etags_and_ranges() {
    let (hub, ann, _, _) = setup().await;
    let o = obj(&noise(1000, 7));
    let (s, _) = upload(&ann, "f1@ann", pack_of(std::slice::from_ref(&o))).await;
    assert_eq!(s, 204);
    let path = format!("/mesh/folders/f1@ann/objects/{}", o.0.hex());
    let etag = format!("\"{}\"", o.0.hex());

    let (s, h, body) = get_range(&ann, &path, None).await;
    assert_eq!((s, &body), (200, &o.1));
    assert_eq!(header(&h, "etag"), etag);
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert_eq!(header(&h, "content-length"), "1000");
    assert_eq!(header(&h, "content-type"), "application/octet-stream");

    for (range, from, to) in [
        ("bytes=10-19", 10, 20),
        ("bytes=990-", 990, 1000),
        ("bytes=-5", 995, 1000),
        ("bytes=0-0", 0, 1),
        ("bytes=500-5000", 500, 1000),
    ] {
        let (s, h, body) = get_range(&ann, &path, Some(range)).await;
        assert_eq!(s, 206, "{range}");
        assert_eq!(body, o.1[from..to], "{range}");
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes {from}-{}/1000", to - 1)
        );
        assert_eq!(header(&h, "content-length"), (to - from).to_string());
    }
    for range in ["bytes=1000-", "bytes=2000-3000", "bytes=-0"] {
        let (s, h, _) = get_range(&ann, &path, Some(range)).await;
        assert_eq!(s, 416, "{range}");
        assert_eq!(header(&h, "content-range"), "bytes */1000");
    }
    // Ranges that are not understood are ignored: the whole object.
    for range in ["bytes=5-1", "bytes=0-1,4-5", "lines=1-2"] {
        let (s, _, body) = get_range(&ann, &path, Some(range)).await;
        assert_eq!((s, body.len()), (200, 1000), "{range}");
    }
    // If-Range with another tag: the whole object; with this one: the range.
    let (s, _, _) = raw(ann
        .req(Method::GET, &path)
        .header("range", "bytes=0-9")
        .header("if-range", "\"other\""))
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = raw(ann
        .req(Method::GET, &path)
        .header("range", "bytes=0-9")
        .header("if-range", &etag))
    .await;
    assert_eq!(s, 206);
    // If-None-Match: 304, no body.
    let (s, h, body) = raw(ann.req(Method::GET, &path).header("if-none-match", &etag)).await;
    assert_eq!((s, body.len()), (304, 0));
    assert_eq!(header(&h, "etag"), etag);
    let (s, _, _) = raw(ann.req(Method::GET, &path).header("if-none-match", "\"x\"")).await;
    assert_eq!(s, 200);
    hub.stop().await;
}

/// Chunks `data` for real, uploads the chunks and the manifest; the manifest's hash.
async fn upload_blob(ann: &Rest, data: &[u8]) -> (ChunkHash, Manifest, Vec<(ChunkHash, Vec<u8>)>) {
    let chunks: Vec<_> = chunk_boundaries(data).map(|r| obj(&data[r])).collect();
    let manifest = Manifest::new(chunks.iter().map(|(h, d)| (*h, d.len() as u32))).unwrap();
    let mut objects = chunks.clone();
    objects.push(obj(&manifest.encode()));
    let (s, e) = upload(ann, "f1@ann", pack_of(&objects)).await;
    assert_eq!(s, 204, "{e}");
    (manifest.hash(), manifest, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mib_blob_is_served_whole_in_ranges_and_resumes_after_a_cut() {
    let (hub, ann, bob, _) = setup().await;
    let data = noise(3 << 20, 42);
    let (h, manifest, chunks) = upload_blob(&ann, &data).await;
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    let path = format!("/mesh/folders/f1@ann/blobs/{}", h.hex());

    // Whole, to a reader too.
    for who in [&ann, &bob] {
        let (s, hd, body) = get_range(who, &path, None).await;
        assert_eq!(s, 200);
        assert_eq!(header(&hd, "content-length"), data.len().to_string());
        assert_eq!(header(&hd, "etag"), format!("\"{}\"", h.hex()));
        assert_eq!(header(&hd, "accept-ranges"), "bytes");
        assert!(body == data, "the assembled blob differs");
    }
    // HEAD: the size without the bytes.
    let (s, hd, body) = raw(ann.req(Method::HEAD, &path)).await;
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(header(&hd, "content-length"), data.len().to_string());

    // Ranges inside one chunk, across chunk boundaries, at both ends.
    let len = data.len();
    let first = manifest.chunks()[0].len as usize;
    let b3: usize = manifest.chunks()[..3].iter().map(|c| c.len as usize).sum();
    let ranges: Vec<(String, usize, usize)> = vec![
        (format!("bytes=0-{}", first - 1), 0, first),
        (
            format!("bytes={}-{}", first - 10, first + 9),
            first - 10,
            first + 10,
        ),
        (format!("bytes=100-{}", b3 + 100), 100, b3 + 101),
        (format!("bytes={}-", first), first, len),
        ("bytes=-1".to_owned(), len - 1, len),
        ("bytes=-1000000".to_owned(), len - 1_000_000, len),
        (format!("bytes={}-{}", b3, b3), b3, b3 + 1),
        (format!("bytes={}-{}", len - 1, len + 100), len - 1, len),
    ];
    for (range, from, to) in ranges {
        let (s, hd, body) = get_range(&ann, &path, Some(&range)).await;
        assert_eq!(s, 206, "{range}");
        assert!(body == data[from..to], "{range}: wrong bytes");
        assert_eq!(
            header(&hd, "content-range"),
            format!("bytes {from}-{}/{len}", to - 1)
        );
        assert_eq!(header(&hd, "content-length"), (to - from).to_string());
    }
    let (s, hd, _) = get_range(&ann, &path, Some(&format!("bytes={len}-"))).await;
    assert_eq!(s, 416);
    assert_eq!(header(&hd, "content-range"), format!("bytes */{len}"));

    // An interrupted download: read part of the stream, drop the connection, resume with
    // `Range: bytes=N-`.
    let resp = ann.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut got = Vec::new();
    let mut stream = resp.bytes_stream();
    while got.len() < 1_000_000 {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    let (s, _, rest) = get_range(&ann, &path, Some(&format!("bytes={}-", got.len()))).await;
    assert_eq!(s, 206);
    got.extend_from_slice(&rest);
    assert!(got == data, "the resumed download differs");

    // If-None-Match: 304.
    let (s, _, _) = raw(ann
        .req(Method::GET, &path)
        .header("if-none-match", format!("\"{}\"", h.hex())))
    .await;
    assert_eq!(s, 304);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_empty_and_non_manifest_blobs() {
    let (hub, ann, _, _) = setup().await;
    // A manifest whose last chunk was never uploaded: 404, like a blob that does not exist.
    let data = noise(600_000, 5);
    let chunks: Vec<_> = chunk_boundaries(&data).map(|r| obj(&data[r])).collect();
    assert!(chunks.len() > 1);
    let manifest = Manifest::new(chunks.iter().map(|(h, d)| (*h, d.len() as u32))).unwrap();
    let mut objects = chunks[..chunks.len() - 1].to_vec();
    objects.push(obj(&manifest.encode()));
    let (s, _) = upload(&ann, "f1@ann", pack_of(&objects)).await;
    assert_eq!(s, 204);
    let path = format!("/mesh/folders/f1@ann/blobs/{}", manifest.hash().hex());
    let (s, _, _) = get_range(&ann, &path, None).await;
    assert_eq!(s, 404);
    // Once the last chunk is in, the blob is there.
    let (s, _) = upload(&ann, "f1@ann", pack_of(&chunks[chunks.len() - 1..])).await;
    assert_eq!(s, 204);
    let (s, _, body) = get_range(&ann, &path, None).await;
    assert!(s == 200 && body == data);
    // An unknown manifest.
    let (s, _, _) = get_range(
        &ann,
        &format!("/mesh/folders/f1@ann/blobs/{}", ChunkHash::of(b"?").hex()),
        None,
    )
    .await;
    assert_eq!(s, 404);
    // An object that is not a manifest.
    let (s, e) = send(ann.req(
        Method::GET,
        &format!("/mesh/folders/f1@ann/blobs/{}", chunks[0].0.hex()),
    ))
    .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_blob")));
    // The empty blob: no chunks, no bytes; every range is unsatisfiable.
    let empty = Manifest::new(Vec::new()).unwrap();
    let (s, _) = upload(&ann, "f1@ann", pack_of(&[obj(&empty.encode())])).await;
    assert_eq!(s, 204);
    let path = format!("/mesh/folders/f1@ann/blobs/{}", empty.hash().hex());
    let (s, hd, body) = get_range(&ann, &path, None).await;
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(header(&hd, "content-length"), "0");
    let (s, _, _) = get_range(&ann, &path, Some("bytes=0-")).await;
    assert_eq!(s, 416);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_lies_about_chunk_lengths_never_gets_a_wrong_body() {
    let (hub, ann, _, _) = setup().await;
    // Caught before the answer starts: 400.
    let a = obj(&noise(1000, 1));
    let b = obj(&noise(1000, 2));
    let liar = Manifest::new([(a.0, 2000), (b.0, 1000)]).unwrap();
    let (s, _) = upload(&ann, "f1@ann", pack_of(&[a, b, obj(&liar.encode())])).await;
    assert_eq!(s, 204);
    let path = format!("/mesh/folders/f1@ann/blobs/{}", liar.hash().hex());
    let (s, e) = send(ann.req(Method::GET, &path)).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_blob")), "{e}");

    // Caught while streaming, after megabytes of good chunks: the body is cut short, which a
    // client sees as an error (never as a complete body).
    let mut objects: Vec<_> = (0..8u64).map(|i| obj(&noise(256 << 10, 10 + i))).collect();
    let mut list: Vec<(ChunkHash, u32)> =
        objects.iter().map(|(h, d)| (*h, d.len() as u32)).collect();
    list[6].1 = 1000;
    let liar = Manifest::new(list).unwrap();
    objects.push(obj(&liar.encode()));
    let (s, _) = upload(&ann, "f1@ann", pack_of(&objects)).await;
    assert_eq!(s, 204);
    let path = format!("/mesh/folders/f1@ann/blobs/{}", liar.hash().hex());
    let resp = ann.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.bytes().await.is_err(), "a truncated body is an error");

    // The hub is still fine.
    let (s, _) = ann.get("/mesh/folders/f1@ann").await;
    assert_eq!(s, 200);
    hub.stop().await;
}

/// The worked example of `docs/protocol.md` ("Blobs"), byte for byte, and present in the doc.
#[test]
fn the_worked_example_of_the_protocol_docs_holds() {
    let data = b"hello world";
    let chunk = ChunkHash::of(data);
    let manifest = Manifest::new([(chunk, data.len() as u32)]).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut frame = Vec::new();
    pack::write_frame(&mut frame, &chunk, data);
    let facts = [
        (
            chunk.hex(),
            "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24",
        ),
        (
            hex(&manifest.encode()),
            "4d53484d 01 00000001 000000000000000b \
             d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24 0000000b",
        ),
        (
            manifest.hash().to_string(),
            "blake3:25b04cd98e158bc95bc635064fa421ad511e9ba5c8e59462da5b9ca090435535",
        ),
        (
            hex(&frame),
            "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24 0000000b \
             68656c6c6f20776f726c64",
        ),
    ];
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    for (actual, documented) in facts {
        let words: Vec<&str> = documented.split_whitespace().collect();
        assert_eq!(actual, words.concat());
        // The doc shows the same bytes, grouped by field.
        assert!(
            doc.contains(&words.join(" ")),
            "docs/protocol.md lacks {documented}"
        );
    }
}
