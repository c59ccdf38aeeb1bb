//! The REST API over HTTP: folders, members and invitations, entries with ETags, queries,
//! Atom in and out, changes with cursors, notifications, limits and error bodies.

use std::time::Duration;

use futures::StreamExt;
use mesh_core::atom::{read_feed, write_feed, AtomFeed};
use mesh_core::model::{EntryDraft, FeedKey};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::MemoryStore;
use mesh_core::time::Timestamp;
use mesh_hub::{Hub, HubConfig};
use reqwest::Method;
use serde_json::json;

use crate::hubs::{send, Rest, TestHub};

/// A hub with ann (owner of folder `f1@ann` with feed `todos`) and bob (no access yet).
async fn setup() -> (TestHub, Rest, Rest) {
    let hub = TestHub::memory().await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let bob = Rest::new(&hub, hub.token("bob", "bob-desk"));
    let (s, f) = ann
        .post(
            "/mesh/folders",
            json!({"name": "Groceries", "kind": "app/todo", "id": "f1@ann"}),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    let (s, _) = ann
        .post(
            "/mesh/folders/f1@ann/feeds",
            json!({"name": "todos", "title": "To do"}),
        )
        .await;
    assert_eq!(s, 201);
    (hub, ann, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_get_404_like_for_a_folder_that_does_not_exist() {
    let (hub, ann, bob) = setup().await;
    let (s, _) = ann
        .post(
            "/mesh/folders/f1@ann/feeds/todos/entries",
            json!({"id": "milk", "title": "Milk"}),
        )
        .await;
    assert_eq!(s, 201);
    for path in [
        "/mesh/folders/f1@ann",
        "/mesh/folders/f1@ann/members",
        "/mesh/folders/f1@ann/mappings",
        "/mesh/folders/f1@ann/news",
        "/mesh/folders/f1@ann/feeds",
        "/mesh/folders/f1@ann/feeds/todos",
        "/mesh/folders/f1@ann/feeds/todos/entries",
        "/mesh/folders/f1@ann/feeds/todos/entries/milk",
        "/mesh/folders/f1@ann/feeds/todos/changes",
    ] {
        let (s, exists) = bob.get(path).await;
        let (s2, missing) = bob.get(&path.replace("/f1@ann", "/nope")).await;
        assert_eq!((s, s2), (404, 404), "{path}");
        assert_eq!(exists["code"], missing["code"]);
        assert_eq!(
            exists["message"].as_str().unwrap().replace("f1@ann", "X"),
            missing["message"].as_str().unwrap().replace("nope", "X"),
            "{path}: the message does not tell them apart"
        );
    }
    let (s, _) = bob
        .post(
            "/mesh/folders/f1@ann/feeds/todos/entries",
            json!({"title": "x"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = bob.delete("/mesh/folders/f1@ann").await;
    assert_eq!(s, 404);
    let (_, list) = bob.get("/mesh/folders").await;
    assert_eq!(list, json!([]));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_created_and_accepted_through_the_api() {
    let (hub, ann, bob) = setup().await;
    let (s, _) = ann
        .post(
            "/mesh/folders/f1@ann/members",
            json!({"user": "nobody", "role": "reader"}),
        )
        .await;
    assert_eq!(s, 404, "unknown users cannot be invited");
    let (s, m) = ann
        .post(
            "/mesh/folders/f1@ann/members",
            json!({"user": "bob", "role": "author"}),
        )
        .await;
    assert_eq!((s, m["state"].as_str()), (201, Some("invited")));
    let (s, _) = ann
        .post(
            "/mesh/folders/f1@ann/members",
            json!({"user": "bob", "role": "author"}),
        )
        .await;
    assert_eq!(s, 409);
    // Invited: bob sees the invitation and the members, not the content.
    let (_, inv) = bob.get("/mesh/invitations").await;
    assert_eq!(inv[0]["folder"], "f1@ann");
    let (s, _) = bob.get("/mesh/folders/f1@ann/members").await;
    assert_eq!(s, 200);
    let (s, _) = bob.get("/mesh/folders/f1@ann/feeds/todos/entries").await;
    assert_eq!(s, 404);
    // Accepting as someone else's role, or raising one's own role, is refused.
    let (s, _) = bob
        .put("/mesh/folders/f1@ann/members/bob", json!({"role": "owner"}))
        .await;
    assert_eq!(s, 403);
    let (s, m) = bob
        .post("/mesh/invitations/f1@ann/accept", json!(null))
        .await;
    assert_eq!((s, m["state"].as_str()), (200, Some("active")));
    let (s, _) = bob
        .post("/mesh/invitations/f1@ann/accept", json!(null))
        .await;
    assert_eq!(s, 404, "nothing left to accept");
    let (_, folders) = bob.get("/mesh/folders").await;
    assert_eq!(folders[0]["id"], "f1@ann");
    // An author writes its own entries, not others'.
    let (s, _) = bob
        .post(
            "/mesh/folders/f1@ann/feeds/todos/entries",
            json!({"id": "b1", "title": "Bob's"}),
        )
        .await;
    assert_eq!(s, 201);
    ann.post(
        "/mesh/folders/f1@ann/feeds/todos/entries",
        json!({"id": "a1", "title": "Ann's"}),
    )
    .await;
    let (s, _) = bob
        .put(
            "/mesh/folders/f1@ann/feeds/todos/entries/a1",
            json!({"title": "mine now"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = bob
        .put("/mesh/folders/f1@ann/members/bob", json!({"role": "owner"}))
        .await;
    assert_eq!(s, 403, "an author cannot promote itself");
    // The owner manages roles; the last owner stays.
    let (s, m) = ann
        .put(
            "/mesh/folders/f1@ann/members/bob",
            json!({"role": "reader"}),
        )
        .await;
    assert_eq!((s, m["role"].as_str()), (200, Some("reader")));
    let (s, _) = ann.delete("/mesh/folders/f1@ann/members/ann").await;
    assert_eq!(s, 403);
    let (_, news) = ann.get("/mesh/folders/f1@ann/news").await;
    let kinds: Vec<_> = news
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].clone())
        .collect();
    assert!(kinds.contains(&json!("member_joined")), "{kinds:?}");
    let (_, news) = bob.get("/mesh/news?$top=1").await;
    assert_eq!(news.as_array().unwrap().len(), 1);
    // Bob leaves.
    let (s, _) = bob.delete("/mesh/folders/f1@ann/members/bob").await;
    assert_eq!(s, 204);
    let (s, _) = bob.get("/mesh/folders/f1@ann").await;
    assert_eq!(s, 404);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_carry_etags_and_if_match_guards_writes() {
    let (hub, ann, _) = setup().await;
    let base = "/mesh/folders/f1@ann/feeds/todos/entries";
    let resp = ann
        .req(Method::POST, base)
        .json(&json!({"id": "milk", "title": "Milk", "content": {"done": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()["location"],
        "/mesh/folders/f1@ann/feeds/todos/entries/milk"
    );
    let tag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let (s, _) = ann
        .post(base, json!({"id": "milk", "title": "again"}))
        .await;
    assert_eq!(s, 409);
    // A stale If-Match is refused with 412, a fresh one accepted.
    let put = |tag: &str| {
        ann.req(Method::PUT, &format!("{base}/milk"))
            .header("If-Match", tag)
            .json(&json!({"title": "Milk", "content": {"done": true}}))
    };
    let (s, _) = send(put("\"stale\"")).await;
    assert_eq!(s, 412);
    let resp = put(&tag).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let tag2 = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(tag, tag2);
    let (s, _) = send(put(&tag)).await;
    assert_eq!(s, 412, "the old tag is stale now");
    let (s, _) = send(
        ann.req(Method::DELETE, &format!("{base}/milk"))
            .header("If-Match", &tag),
    )
    .await;
    assert_eq!(s, 412);
    let (s, _) = send(
        ann.req(Method::DELETE, &format!("{base}/milk"))
            .header("If-Match", &tag2),
    )
    .await;
    assert_eq!(s, 204);
    let (s, e) = ann.get(&format!("{base}/milk")).await;
    assert_eq!((s, e["sync"]["deleted"].as_bool()), (200, Some(true)));
    let (_, list) = ann.get(base).await;
    assert_eq!(list["count"], 0, "tombstones are left out of JSON lists");
    let (_, list) = ann.get(&format!("{base}?deleted=true")).await;
    assert_eq!(list["count"], 1);
    let (s, _) = send(
        ann.req(Method::PUT, &format!("{base}/ghost"))
            .header("If-Match", "*")
            .json(&json!({"title": "x"})),
    )
    .await;
    assert_eq!(s, 412);
    let (s, _) = ann
        .put(&format!("{base}/ghost"), json!({"title": "x"}))
        .await;
    assert_eq!(s, 404);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_order_and_page() {
    let (hub, ann, _) = setup().await;
    let base = "/mesh/folders/f1@ann/feeds/todos/entries";
    for (i, (title, done)) in [("b", true), ("a", false), ("d", false), ("c", true)]
        .iter()
        .enumerate()
    {
        let (s, _) = ann
            .post(
                base,
                json!({"id": format!("e{i}"), "title": title, "content": {"done": done, "n": i}}),
            )
            .await;
        assert_eq!(s, 201);
    }
    let titles = |v: serde_json::Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["content"]["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let q = |s: &str| format!("{base}?{s}");
    let (_, v) = ann.get(&q("$orderby=title%20desc")).await;
    assert_eq!(titles(v), ["d", "c", "b", "a"]);
    let (_, v) = ann
        .get(&q("$filter=content/done%20eq%20false&$orderby=title"))
        .await;
    assert_eq!(titles(v), ["a", "d"]);
    let (_, v) = ann
        .get(&q(
            "$filter=content/n%20gt%200%20and%20(title%20eq%20'a'%20or%20title%20eq%20'c')",
        ))
        .await;
    assert_eq!(titles(v), ["a", "c"]);
    let (_, v) = ann.get(&q("$orderby=title&$skip=1&$top=2")).await;
    assert_eq!(v["more"], true, "d matches past the page");
    assert_eq!(titles(v), ["b", "c"]);
    let (_, v) = ann.get(&q("$orderby=title&$skip=2&$top=2")).await;
    assert_eq!(
        (v["count"].clone(), v["more"].clone()),
        (json!(2), json!(false))
    );
    let (_, v) = ann.get(&q("$top=3")).await;
    assert_eq!(
        (v["count"].clone(), v["more"].clone()),
        (json!(3), json!(true))
    );
    let (_, v) = ann.get(base).await;
    assert_eq!(
        (v["count"].clone(), v["more"].clone()),
        (json!(4), json!(false))
    );
    let (_, v) = ann.get(&q("$filter=author%20ne%20'ann'")).await;
    assert_eq!(v["count"], 0);
    let (_, v) = ann
        .get(&q("$filter=updated%20gt%202000-01-01T00:00:00Z"))
        .await;
    assert_eq!(v["count"], 4);
    for bad in [
        "$filter=title%20like%20'a'",
        "$orderby=nope",
        "$top=x",
        "$filter=(((",
        "$skip=-1",
        "$skip=100000000",
        "$orderby=title&$skip=100001",
    ] {
        let (s, v) = ann.get(&q(bad)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}"
        );
    }
    hub.stop().await;
}

/// An Atom listing split into pages links to the next one (RFC 5005), relative to the
/// request, keeping its other parameters: following the links reads the feed once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atom_pages_link_to_the_next() {
    let (hub, ann, _bob) = setup().await;
    let base = "/mesh/folders/f1@ann/feeds/todos/entries";
    for i in 0..5 {
        let (s, _) = ann
            .post(
                base,
                json!({"id": format!("e{i}"), "title": format!("t & {i}")}),
            )
            .await;
        assert_eq!(s, 201);
    }
    let read = |path: String| {
        let req = ann
            .req(Method::GET, &path)
            .header("Accept", "application/atom+xml");
        async move { read_feed(&req.send().await.unwrap().text().await.unwrap()).unwrap() }
    };
    // Entries, two a page, filtered (a value that needs escaping in a query) and ordered.
    let first = format!("{base}?$top=2&$orderby=id%20desc&$filter=title%20ne%20'x%20%26%20y'");
    let (mut ids, mut path, mut pages) = (Vec::new(), first, 0);
    loop {
        let feed = read(path.clone()).await;
        pages += 1;
        ids.extend(feed.entries.iter().map(|e| e.sync.id.to_string()));
        let Some(next) = feed.next else { break };
        assert!(next.starts_with("?%24filter="), "{next}");
        path = format!("{base}{next}");
        assert!(pages < 5, "the links do not end");
    }
    assert_eq!(ids, ["e4", "e3", "e2", "e1", "e0"]);
    assert_eq!(pages, 3);
    // A whole listing has no next link.
    assert_eq!(read(base.to_owned()).await.next, None);

    // Changes, two a page: the link carries the cursor on.
    let changes = "/mesh/folders/f1@ann/feeds/todos/changes";
    let (mut ids, mut path, mut pages) = (Vec::new(), format!("{changes}?limit=2"), 0);
    loop {
        let feed = read(path.clone()).await;
        pages += 1;
        ids.extend(feed.entries.iter().map(|e| e.sync.id.to_string()));
        let Some(next) = feed.next else { break };
        path = format!("{changes}{next}");
        assert!(pages < 5, "the links do not end");
    }
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(pages, 3);
    hub.stop().await;
}

/// An Atom listing without `$top` of more entries than one answer holds is answered a page at
/// a time with a next link, where a JSON one is refused (`422 limit_exceeded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_atom_listing_is_paged_not_refused() {
    let (hub, ann, _bob) = setup().await;
    let base = "/mesh/folders/f1@ann/feeds/todos/entries";
    let key = FeedKey::folder("f1@ann".parse().unwrap(), "todos".parse().unwrap());
    let mut tool = Replica::new(MemoryStore::new("tool".parse().unwrap()));
    let actor = Actor::new("ann".parse().unwrap(), "feedsync-tool".parse().unwrap());
    let t = Timestamp::from_unix(1_800_000_000).unwrap();
    let max_top = 10_000;
    let entries: Vec<_> = (0..=max_top)
        .map(|i| {
            let draft = EntryDraft::new(format!("{i}"), json!(null));
            let id = format!("e{i:05}").parse().unwrap();
            tool.create(&key, id, draft, &actor, t).unwrap().entry
        })
        .collect();
    let xml = write_feed(&AtomFeed {
        id: "urn:tool".into(),
        title: "tool".into(),
        updated: t,
        entries,
        next: None,
    });
    let (s, v) = send(
        ann.req(Method::POST, base)
            .header("Content-Type", "application/atom+xml")
            .body(xml),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = ann.get(base).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("limit_exceeded")));
    let get = |path: String| {
        let req = ann
            .req(Method::GET, &path)
            .header("Accept", "application/atom+xml");
        async move { read_feed(&req.send().await.unwrap().text().await.unwrap()).unwrap() }
    };
    let first = get(base.to_owned()).await;
    assert_eq!(first.entries.len(), max_top);
    let next = first.next.expect("a next link");
    assert_eq!(next, "?%24skip=10000&%24top=10000");
    let rest = get(format!("{base}{next}")).await;
    let ids: Vec<String> = rest.entries.iter().map(|e| e.sync.id.to_string()).collect();
    assert_eq!(ids, [format!("e{max_top:05}")]);
    assert_eq!(rest.next, None);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atom_out_and_a_feedsync_feed_in() {
    let (hub, ann, bob) = setup().await;
    let base = "/mesh/folders/f1@ann/feeds/todos/entries";
    ann.post(
        base,
        json!({"id": "milk", "title": "Milk <&>", "content": {"done": false}}),
    )
    .await;
    let resp = ann
        .req(Method::GET, base)
        .header("Accept", "application/atom+xml")
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/atom+xml"));
    let feed = read_feed(&resp.text().await.unwrap()).unwrap();
    assert_eq!(feed.entries.len(), 1);
    assert_eq!(feed.entries[0].content.title, "Milk <&>");
    let resp = ann
        .req(Method::GET, &format!("{base}/milk"))
        .header("Accept", "application/atom+xml")
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("<sx:sync id=\"milk\""));

    // A feed written by another FeedSync endpoint merges: one new entry, one concurrent edit.
    let key = FeedKey::folder("f1@ann".parse().unwrap(), "todos".parse().unwrap());
    let mut other = Replica::new(MemoryStore::new("tool".parse().unwrap()));
    let actor = Actor::new("ann".parse().unwrap(), "feedsync-tool".parse().unwrap());
    let t = Timestamp::from_unix(1_800_000_000).unwrap();
    other.merge(&key, feed.entries[0].clone(), None).unwrap();
    let edited = other
        .update(
            &key,
            &"milk".parse().unwrap(),
            EntryDraft::new("Milk (tool)", json!({"done": true})),
            &actor,
            t,
        )
        .unwrap()
        .entry;
    let new = other
        .create(
            &key,
            "eggs".parse().unwrap(),
            EntryDraft::new("Eggs", json!({})),
            &actor,
            t,
        )
        .unwrap()
        .entry;
    let xml = write_feed(&AtomFeed {
        id: "urn:tool".into(),
        title: "tool".into(),
        updated: t,
        entries: vec![edited, new],
        next: None,
    });
    let (s, v) = send(
        ann.req(Method::POST, base)
            .header("Content-Type", "application/atom+xml")
            .body(xml.clone()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let outcomes: Vec<_> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("updated"), json!("added")]);
    let (_, e) = ann.get(&format!("{base}/milk")).await;
    assert_eq!(e["content"]["title"], "Milk (tool)");
    // Merging it again changes nothing; a non-member's import is refused as not found.
    let (_, v) = send(
        ann.req(Method::POST, base)
            .header("Content-Type", "application/atom+xml")
            .body(xml.clone()),
    )
    .await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["outcome"] == "unchanged"));
    let (s, _) = send(
        bob.req(Method::POST, base)
            .header("Content-Type", "application/atom+xml")
            .body(xml),
    )
    .await;
    assert_eq!(s, 404);
    // Malformed XML is a 400 with the position.
    let (s, v) = send(
        ann.req(Method::POST, base)
            .header("Content-Type", "application/atom+xml")
            .body("<feed><entry></feed>"),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_xml")));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changes_feed_pages_with_opaque_cursors() {
    let (hub, ann, _) = setup().await;
    let base = "/mesh/folders/f1@ann/feeds/todos";
    for i in 0..5 {
        ann.post(
            &format!("{base}/entries"),
            json!({"id": format!("e{i}"), "title": "x"}),
        )
        .await;
    }
    let (_, p1) = ann.get(&format!("{base}/changes?limit=3")).await;
    assert_eq!(
        (p1["entries"].as_array().unwrap().len(), &p1["more"]),
        (3, &json!(true))
    );
    let c1 = p1["cursor"].as_str().unwrap().to_owned();
    let (_, p2) = ann
        .get(&format!("{base}/changes?limit=3&cursor={c1}"))
        .await;
    assert_eq!(
        (p2["entries"].as_array().unwrap().len(), &p2["more"]),
        (2, &json!(false))
    );
    let c2 = p2["cursor"].as_str().unwrap().to_owned();
    let (_, p3) = ann.get(&format!("{base}/changes?cursor={c2}")).await;
    assert!(p3["entries"].as_array().unwrap().is_empty());
    // An update moves the entry to the end of the log.
    ann.put(&format!("{base}/entries/e0"), json!({"title": "y"}))
        .await;
    let (_, p4) = ann.get(&format!("{base}/changes?cursor={c2}")).await;
    assert_eq!(p4["entries"][0]["sync"]["id"], "e0");
    // Cursors are opaque and bound to their feed.
    for bad in ["junk", "5-000000000000", "zz", &c1.replace('-', "")] {
        let (s, v) = ann.get(&format!("{base}/changes?cursor={bad}")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_cursor")),
            "{bad}"
        );
    }
    ann.post("/mesh/folders/f1@ann/feeds", json!({"name": "other"}))
        .await;
    let (s, _) = ann
        .get(&format!(
            "/mesh/folders/f1@ann/feeds/other/changes?cursor={c1}"
        ))
        .await;
    assert_eq!(s, 400);
    let (s, _) = ann.get(&format!("{base}/changes?limit=0")).await;
    assert_eq!(s, 400);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_and_server_sent_events_resume_from_a_cursor() {
    let (hub, ann, bob) = setup().await;
    // A long-poll with nothing new answers at the deadline with a cursor.
    let (s, v) = ann.get("/mesh/notifications?wait=0").await;
    assert_eq!(s, 200);
    let c0 = v["cursor"].as_str().unwrap().to_owned();
    // A change while polling wakes the poll.
    let poll = {
        let req = ann.req(
            Method::GET,
            &format!("/mesh/notifications?wait=30&cursor={c0}"),
        );
        tokio::spawn(send(req))
    };
    ann.post(
        "/mesh/folders/f1@ann/feeds/todos/entries",
        json!({"title": "new"}),
    )
    .await;
    let (_, v) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["changes"][0]["feed"]["name"], "todos");
    // Resuming from the first cursor replays what moved since; bob sees none of it.
    let (_, v) = ann
        .get(&format!("/mesh/notifications?wait=0&cursor={c0}"))
        .await;
    assert_eq!(v["changes"].as_array().unwrap().len(), 1);
    let (_, v) = bob
        .get(&format!("/mesh/notifications?wait=0&cursor={c0}"))
        .await;
    assert!(v["changes"].as_array().unwrap().is_empty());
    let (s, v) = ann.get("/mesh/notifications?cursor=bogus").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_cursor")));

    // SSE from a cursor: the backlog first (folder creation, feeds, entries), then live.
    let resp = ann
        .req(Method::GET, "/mesh/notifications")
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", &c0)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"todos\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: change"));
    assert!(text.contains("id: "));
    ann.post("/mesh/folders/f1@ann/feeds", json!({"name": "later"}))
        .await;
    while !text.contains("\"feeds\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_with_a_json_error_body() {
    let hub = TestHub::start(
        Hub::builder()
            .config(HubConfig {
                max_body: 4096,
                ..HubConfig::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    ann.post("/mesh/folders", json!({"name": "F", "id": "f1@ann"}))
        .await;
    let anon = Rest {
        token: "mesh_wrong".into(),
        ..Rest::new(&hub, String::new())
    };
    let (s, v) = anon.get("/mesh/folders").await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")));
    let (s, _) = send(reqwest::Client::new().get(format!("{}/mesh", hub.url))).await;
    assert_eq!(s, 401);
    // Too large a body.
    let big = json!({"title": "x".repeat(10_000)});
    let (s, v) = ann.post("/mesh/folders/f1@ann/feeds", big.clone()).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("payload_too_large")));
    let (s, _) = ann.post("/mesh/sync", big).await;
    assert_eq!(s, 413);
    // Malformed JSON, wrong shapes, wrong media types.
    for body in ["{", "[]", "{\"type\":\"nope\"}", "null", "\u{0}"] {
        let (s, v) = send(
            ann.req(Method::POST, "/mesh/sync")
                .header("Content-Type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_json")),
            "{body:?}"
        );
    }
    let (s, _) = send(
        ann.req(Method::POST, "/mesh/folders")
            .header("Content-Type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(s, 415);
    // A malformed folder kind creates nothing; a well-formed custom one is kept as given.
    for kind in ["my files", "app/", "", "a//b"] {
        let (s, v) = ann
            .post(
                "/mesh/folders",
                json!({"name": "K", "kind": kind, "id": "k1@ann"}),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_json")),
            "{kind:?}"
        );
    }
    let (s, v) = ann
        .post(
            "/mesh/folders",
            json!({"name": "K", "kind": "acme/ledger", "id": "k1@ann"}),
        )
        .await;
    assert_eq!((s, v["kind"].as_str()), (201, Some("acme/ledger")), "{v}");
    // Unknown ids and junk paths.
    for path in [
        "/mesh/folders/nope/feeds/x/entries/y",
        "/mesh/folders/f1@ann/feeds/bad%2Fname/entries",
        "/mesh/folders/f1@ann/feeds/todos/entries/nope",
        "/mesh/devices/nope",
        "/mesh/nothing/here",
        "/",
        "/mesh/folders/%FF%FE",
        "/mesh/invitations/f1@ann/maybe",
    ] {
        let (s, v) = ann.get(path).await;
        assert!((400..500).contains(&s), "{path}: {s} {v}");
    }
    let (s, v) = send(ann.req(Method::PATCH, "/mesh/folders")).await;
    assert_eq!((s, v["code"].as_str()), (405, Some("method_not_allowed")));
    // OPTIONS describes a resource without a token.
    let resp = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/mesh/folders/x/feeds/y/entries", hub.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["allow"], "GET, POST, OPTIONS");
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        doc["query"],
        json!(["$top", "$skip", "$orderby", "$filter"])
    );
    let (s, _) =
        send(reqwest::Client::new().request(Method::OPTIONS, format!("{}/nope", hub.url))).await;
    assert_eq!(s, 404);
    hub.stop().await;
}
