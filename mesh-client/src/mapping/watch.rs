//! Watching a mapped directory with file-system notifications (the `notify` crate).
//!
//! A notification only says "look again": the pass that follows scans the directory and
//! decides. So what matters here is which notifications start a pass, that the watch stays
//! inside the mapped directory, and that a watch that has become incomplete is said so.
//!
//! * **Symbolic links are not followed.** `notify` follows them by default when it adds a
//!   watch for every directory of the tree. A link inside the mapping to a large tree (a home
//!   directory, `/`) would then be walked at start, up to the system's limit on watches, and
//!   every change out there would start a pass. Passes neither follow nor sync links either.
//! * **Reads start no pass** ([`signal`]): Linux reports every open of a file or directory, so
//!   an application reading its files, or a pass's own scan, would otherwise start the next
//!   pass, without end.
//! * **A lost notification starts a pass.** When the kernel's queue overflows, `notify`
//!   reports one event asking for a rescan; it is a change like any other.
//! * **An error is a gap.** When the limit on watches is reached (Linux's
//!   `fs.inotify.max_user_watches`), directories made afterwards are not watched and `notify`
//!   reports an error; a tree with more directories than the limit at start is watched up to
//!   it. The mapping tells the user once, runs a pass at once, and from then on relies on its
//!   periodic rescan ([`super::MappingOptions::rescan_interval`]) for what the watch does not
//!   see.
//!
//! Setting a watch up walks the whole tree (one watch per directory): [`start`] is blocking,
//! and the mapping calls it off the async runtime's workers.

use std::path::Path;

/// What a notification means to the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Signal {
    /// Something may have changed: run a pass soon.
    Change,
    /// The watch missed or may miss changes from now on: tell the user, and run a pass.
    Gap(String),
    /// Nothing a pass would publish (a read).
    Nothing,
}

/// What the notification `res` means to the mapping.
pub(super) fn signal(res: &notify::Result<notify::Event>) -> Signal {
    use notify::event::{AccessKind, AccessMode};
    match res {
        Err(e) => Signal::Gap(gap(e)),
        Ok(e) => match e.kind {
            notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => Signal::Change,
            notify::EventKind::Access(_) => Signal::Nothing,
            _ => Signal::Change,
        },
    }
}

/// What to tell the user of the error `e` of the watch.
fn gap(e: &notify::Error) -> String {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "file-system notifications: the system's limit on watched directories is reached \
             ({e}; on Linux fs.inotify.max_user_watches): changes in the directories left \
             unwatched are found by the periodic rescan only"
        ),
        _ => format!("file-system notifications: {e}"),
    }
}

/// A watch set up by [`start`].
pub(super) struct Started {
    /// The watch, to keep for as long as the mapping runs; `None` when none could be set up.
    pub watcher: Option<notify::RecommendedWatcher>,
    /// What to tell the user when the watch does not cover the whole tree.
    pub gap: Option<String>,
}

/// Watches every directory beneath `root`, without following symbolic links, calling
/// `handler` with each notification (on `notify`'s own thread). Blocking: it walks the tree.
///
/// When the tree has more directories than the system lets a user watch, the directories
/// watched before the limit stay watched (with the gap told); any other failure leaves no
/// watch.
pub(super) fn start<F>(root: &Path, handler: F) -> Started
where
    F: notify::EventHandler,
{
    use notify::Watcher;
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = match notify::RecommendedWatcher::new(handler, config) {
        Ok(w) => w,
        Err(e) => {
            return Started {
                watcher: None,
                gap: Some(format!("file-system notifications: {e}")),
            }
        }
    };
    match watcher.watch(root, notify::RecursiveMode::Recursive) {
        Ok(()) => Started {
            watcher: Some(watcher),
            gap: None,
        },
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Started {
            watcher: Some(watcher),
            gap: Some(gap(&e)),
        },
        Err(e) => Started {
            watcher: None,
            gap: Some(format!("watching {}: {e}", root.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Notifications until one names `last` (each awaited at most 20 s: a watch that never
    /// reports is a failure, not a hang).
    fn until(
        rx: &mpsc::Receiver<notify::Result<notify::Event>>,
        last: &Path,
    ) -> Vec<notify::Event> {
        let mut seen = Vec::new();
        loop {
            let e = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a notification for the sentinel file")
                .expect("no watch error");
            let done = e.paths.iter().any(|p| p == last);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_inside_the_mapping_is_not_watched_through() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let (tx, rx) = mpsc::channel();
        let started = start(&root, tx);
        assert_eq!(started.gap, None);
        // Changes outside, through the link, then one inside: the watch reports in order, so
        // anything from outside would come before the sentinel.
        std::fs::write(outside.join("elsewhere.txt"), b"not ours").unwrap();
        std::fs::create_dir(outside.join("deeper")).unwrap();
        let sentinel = root.join("sub").join("sentinel.txt");
        std::fs::write(&sentinel, b"ours").unwrap();
        let seen = until(&rx, &sentinel);
        let stray: Vec<_> = seen
            .iter()
            .flat_map(|e| &e.paths)
            .filter(|p| !p.starts_with(root.join("sub")) && *p != &root)
            .collect();
        assert!(stray.is_empty(), "notified through the link: {stray:?}");
    }

    #[test]
    fn reads_start_no_pass_and_lost_notifications_or_errors_do() {
        use notify::event::{AccessKind, AccessMode, CreateKind, Flag};
        use notify::{Event, EventKind};
        let read = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)));
        assert_eq!(signal(&Ok(read)), Signal::Nothing);
        let closed = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)));
        assert_eq!(signal(&Ok(closed)), Signal::Change);
        let made = Event::new(EventKind::Create(CreateKind::File));
        assert_eq!(signal(&Ok(made)), Signal::Change);
        // What `notify` reports when the kernel's queue overflowed.
        let lost = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(signal(&Ok(lost)), Signal::Change);
        let full = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        match signal(&Err(full)) {
            Signal::Gap(why) => assert!(why.contains("limit on watched directories"), "{why}"),
            other => panic!("{other:?}"),
        }
        let io = notify::Error::io(std::io::Error::other("the queue broke"));
        assert!(matches!(signal(&Err(io)), Signal::Gap(_)));
    }
}
