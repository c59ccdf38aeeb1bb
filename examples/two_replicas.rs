//! The core protocol by hand: two replicas of one feed, edited concurrently, synced through the
//! sync protocol, with the conflict surfaced and resolved.
//!
//! ```text
//! cargo run --example two_replicas
//! ```
//!
//! Everything runs in memory in one process: two devices of one user ("laptop" and "phone")
//! each hold a replica; a sync session on the laptop talks to the phone's responder. (Later
//! stages of the SDK add the background client, the SQLite store and a hub between them.)

use mesh::core::feedsync::MergeOutcome;
use mesh::core::model::{EntryDraft, FeedKey};
use mesh::core::replica::{Actor, Replica, Resolution};
use mesh::core::store::{MemoryStore, Store};
use mesh::core::sync::{
    respond, Request, Response, SessionConfig, SessionEvent, Step, SyncSession,
};
use mesh::core::time::Timestamp;
use mesh::core::Result;
use serde_json::json;

type Device = Replica<MemoryStore>;

fn main() -> Result<()> {
    let feed: FeedKey = "folder:groceries/todos".parse()?;
    let mut laptop = Replica::new(MemoryStore::new("laptop".parse()?));
    let mut phone = Replica::new(MemoryStore::new("phone".parse()?));
    let on_laptop = Actor::new("ann".parse()?, "laptop".parse()?);
    let on_phone = Actor::new("ann".parse()?, "phone".parse()?);
    let mut clock = Timestamp::from_unix(1_790_000_000)?;
    let mut now = || {
        clock = clock.plus_secs(1);
        clock
    };

    step("1. Ann writes two to-dos on her laptop");
    for (id, title) in [("milk", "Buy milk"), ("eggs", "Buy eggs")] {
        let w = laptop.create(
            &feed,
            id.parse()?,
            EntryDraft::new(title, json!({"done": false})),
            &on_laptop,
            now(),
        )?;
        println!(
            "   laptop: created {id:<5} {:?} (change #{})",
            w.entry.content.title, w.seq
        );
    }

    step("2. The laptop syncs with the phone");
    sync(&mut laptop, &mut phone)?;
    show("phone", &phone, &feed)?;

    step("3. Both devices edit \"milk\" while apart");
    laptop.update(
        &feed,
        &"milk".parse()?,
        EntryDraft::new("Buy oat milk", json!({"done": false})),
        &on_laptop,
        now(),
    )?;
    println!("   laptop: \"Buy milk\" -> \"Buy oat milk\"");
    phone.update(
        &feed,
        &"milk".parse()?,
        EntryDraft::new("Buy milk", json!({"done": true})),
        &on_phone,
        now(),
    )?;
    println!("   phone:  marked \"Buy milk\" done");

    step("4. They sync again: FeedSync keeps both versions");
    let events = sync(&mut laptop, &mut phone)?;
    for e in &events {
        if let SessionEvent::Merged { report, .. } = e {
            if report.outcome == MergeOutcome::Conflict {
                println!("   laptop: CONFLICT on {:?}", report.id.as_str());
            }
        }
    }
    let milk = laptop.get(&feed, &"milk".parse()?)?.expect("milk exists");
    println!(
        "   winner:   {:?} {} (by {})",
        milk.content.title,
        milk.content.content,
        top_by(&milk.sync)
    );
    for c in &milk.conflicts {
        println!(
            "   conflict: {:?} {} (by {})",
            c.content.title,
            c.content.content,
            top_by(&c.sync)
        );
    }

    step("5. Ann resolves on the laptop: oat milk, and done");
    let resolved = EntryDraft::new("Buy oat milk", json!({"done": true}));
    laptop.resolve(
        &feed,
        &"milk".parse()?,
        Resolution::Write(resolved),
        &on_laptop,
        now(),
    )?;
    sync(&mut laptop, &mut phone)?;
    show("laptop", &laptop, &feed)?;
    show("phone", &phone, &feed)?;

    let same = laptop.store().list(&feed, None, 100)? == phone.store().list(&feed, None, 100)?;
    step(if same {
        "Both replicas are identical."
    } else {
        "The replicas differ!"
    });
    if !same {
        std::process::exit(1);
    }
    Ok(())
}

/// One sync session: the laptop drives it, the phone answers. Prints each message.
fn sync(local: &mut Device, remote: &mut Device) -> Result<Vec<SessionEvent>> {
    let mut session = SyncSession::new(SessionConfig::new("phone".parse()?));
    let mut events = Vec::new();
    loop {
        match session.poll(local)? {
            Step::Send(request) => {
                println!("   -> {}", describe_request(&request));
                let response = respond(remote, request)?;
                println!("   <- {}", describe_response(&response));
                events.extend(session.receive(local, response)?);
            }
            Step::Done(r) => {
                println!(
                    "   done: {} sent, {} received ({} added, {} updated, {} conflicts)",
                    r.sent, r.received, r.added, r.updated, r.conflicts
                );
                return Ok(events);
            }
        }
    }
}

fn describe_request(r: &Request) -> String {
    match r {
        Request::Feeds { .. } => "feeds?".into(),
        Request::Pull { feed, since, .. } => format!("pull {feed} since #{since}"),
        Request::Push { feed, entries, .. } => format!("push {} entries to {feed}", entries.len()),
        Request::PushEncoded { feed, entries, .. } => {
            format!("push {} entries to {feed}", entries.len())
        }
    }
}

fn describe_response(r: &Response) -> String {
    match r {
        Response::Feeds { replica, feeds, .. } => format!("{replica} holds {} feeds", feeds.len()),
        Response::Changes { entries, next, .. } => {
            format!("{} changes, up to #{next}", entries.len())
        }
        Response::Pushed { results, .. } => {
            let outcomes: Vec<_> = results
                .iter()
                .map(|r| format!("{}: {:?}", r.id, r.outcome))
                .collect();
            format!("merged [{}]", outcomes.join(", "))
        }
    }
}

fn show(name: &str, r: &Device, feed: &FeedKey) -> Result<()> {
    for e in r.store().list(feed, None, 100)? {
        println!(
            "   {name}: {:<5} {:?} {} ({} conflicts)",
            e.sync.id.as_str(),
            e.content.title,
            e.content.content,
            e.conflicts.len()
        );
    }
    Ok(())
}

fn top_by(s: &mesh::core::feedsync::SyncMeta) -> String {
    s.topmost()
        .and_then(|h| h.by.as_ref())
        .map(|b| b.to_string())
        .unwrap_or_default()
}

fn step(s: &str) {
    println!("\n== {s}");
}
