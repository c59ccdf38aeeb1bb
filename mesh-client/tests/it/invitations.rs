//! Invitations a hub refuses: reported as typed events, withdrawn from the local state.

use std::time::Duration;

use futures::StreamExt;
use mesh_client::prelude::*;

use crate::common::builder;

async fn next_refusal(events: &mut (impl futures::Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(e @ Event::Refused { .. }) => return e,
                Some(_) => continue,
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("no Refused event within 10 s")
}

fn users(members: &[Member]) -> Vec<String> {
    let mut out: Vec<String> = members.iter().map(|m| m.user.to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_of_an_unknown_user_is_reported_and_withdrawn() {
    let hub = InProcessHub::new();
    hub.add_user("ann".parse().unwrap());
    hub.add_user("bob".parse().unwrap());
    let ann = builder("ann", "laptop")
        .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .sync_options(SyncOptions::default().with_auto(false))
        .build()
        .await
        .unwrap();
    let mut events = ann.events();
    let folder = ann
        .create_folder("Notes", FolderKind::app("notes").unwrap())
        .await
        .unwrap()
        .id;
    let nobody: UserId = "nobody".parse().unwrap();
    // Offline, both invitations are accepted, like every local write.
    ann.invite(&folder, &nobody, Role::Reader).await.unwrap();
    ann.invite(&folder, &"bob".parse().unwrap(), Role::Reader)
        .await
        .unwrap();
    assert_eq!(
        users(&ann.members(&folder).await.unwrap()),
        ["ann", "bob", "nobody"]
    );

    ann.sync_now().await.unwrap();
    // The hub's refusal arrives as a typed event about the member entry...
    match next_refusal(&mut events).await {
        Event::Refused { feed, id, kind, .. } => {
            assert_eq!(kind, ErrorKind::NotFound);
            assert_eq!(feed, FeedKey::members(&folder));
            assert_eq!(id.as_str(), "nobody");
        }
        other => unreachable!("{other:?}"),
    }
    // ...and the local state no longer shows a member the folder will never have.
    assert_eq!(users(&ann.members(&folder).await.unwrap()), ["ann", "bob"]);
    // The withdrawal syncs: the hub ends with bob invited and no record of nobody but a
    // deletion; a second sync refuses nothing.
    ann.sync_now().await.unwrap();
    let members = FeedKey::members(&folder);
    let on_hub = |user: &str| {
        let id: EntryId = user.parse().unwrap();
        hub.inspect(|r| r.get(&members, &id).unwrap())
    };
    assert!(on_hub("bob").is_some_and(|e| !e.is_deleted()));
    assert!(on_hub("nobody").is_none_or(|e| e.is_deleted()));
    ann.sync_now().await.unwrap();
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        assert!(!matches!(e, Event::Refused { .. }), "{e:?}");
    }
    // An invitation of a user the hub knows is not touched.
    let bob = builder("bob", "desk")
        .remote("hub".parse().unwrap(), hub.connect("bob".parse().unwrap()))
        .sync_options(SyncOptions::default().with_auto(false))
        .build()
        .await
        .unwrap();
    bob.sync_now().await.unwrap();
    let invited: Vec<FolderId> = bob
        .invitations()
        .await
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(invited, [folder]);
}
