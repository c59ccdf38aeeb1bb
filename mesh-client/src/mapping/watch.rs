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
//! * **Wake-ups are bounded.** However many notifications arrive while a pass runs, one
//!   wake-up waits for the mapping ([`Wakes`]); a gap's message is kept aside from it.
//! * **Passes are paced.** A pass started by notifications waits for the debounce, and at
//!   least four times as long as the last pass took since it ended ([`pass_after`]), so a file
//!   written all the time does not keep the whole tree rescanned back to back. Passes for
//!   remote changes, asked for, or retried are not paced.
//!
//! * **The watch follows the root.** After every pass that found the root in place, the
//!   mapping sets the watch up again if the directory there is not the one watched ([`Watch`]):
//!   one made again, or a copy put back from a backup.
//!
//! Setting a watch up walks the whole tree (one watch per directory): [`start`] is blocking,
//! and the mapping calls it off the async runtime's workers.

use std::path::Path;
use std::sync::{Arc, Mutex};

/// What a notification means to the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Signal {
    /// Something may have changed: run a pass soon.
    Change,
    /// The watch missed or may miss changes from now on: tell the user, and run a pass.
    Gap(String),
    /// Nothing a pass would publish (a read).
    Nothing,
}

/// What the notification `res` means to the mapping.
fn signal(res: &notify::Result<notify::Event>) -> Signal {
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

/// How many times as long as the last pass took a pass started by notifications waits after
/// it: passes started by notifications then take at most a fifth of the time, however often
/// the directory changes.
const BUSY: u32 = 4;

/// When a pass is due for a notification at `now`, given when the last pass ended and how
/// long it took (`last`). After the debounce at the earliest; and, so that a file changed
/// all the time (a log, a database) does not keep the mapping rescanning the whole tree
/// back to back, not before [`BUSY`] times the last pass's duration has passed since it
/// ended. That wait is at most the periodic rescan's interval (a pass longer than the interval
/// runs at that pace anyway). A quiet directory is not delayed: a pass long ago waits for the
/// debounce only.
pub(super) fn pass_after(
    now: tokio::time::Instant,
    options: &super::MappingOptions,
    last: Option<(tokio::time::Instant, std::time::Duration)>,
) -> tokio::time::Instant {
    let debounced = now + options.debounce;
    let Some((ended, took)) = last else {
        return debounced;
    };
    let rested = ended
        .checked_add(took.saturating_mul(BUSY))
        .unwrap_or(debounced)
        .min(now + options.rescan_interval);
    debounced.max(rested)
}

/// Where the watch's thread leaves notifications for the mapping: at most one wake-up
/// pending, however many notifications arrive while a pass runs (a build writing a million
/// files must not queue a million wake-ups), and the first gap's message kept aside so that
/// it is never lost to a full queue.
#[derive(Clone)]
pub(super) struct Wakes {
    tx: tokio::sync::mpsc::Sender<()>,
    gap: Arc<Mutex<Option<String>>>,
}

/// The mapping's side of [`Wakes`].
pub(super) struct Woken {
    rx: tokio::sync::mpsc::Receiver<()>,
    gap: Arc<Mutex<Option<String>>>,
}

/// A new pair: the watch's side and the mapping's.
pub(super) fn wakes() -> (Wakes, Woken) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let gap = Arc::new(Mutex::new(None));
    (
        Wakes {
            tx,
            gap: gap.clone(),
        },
        Woken { rx, gap },
    )
}

impl Wakes {
    /// Takes the notification `res` (on the watch's thread).
    pub(super) fn note(&self, res: &notify::Result<notify::Event>) {
        match signal(res) {
            Signal::Nothing => return,
            Signal::Change => {}
            Signal::Gap(why) => {
                let mut gap = self.gap.lock().unwrap_or_else(|p| p.into_inner());
                gap.get_or_insert(why);
            }
        }
        // Full means a wake-up is already pending: this one rides along.
        let _ = self.tx.try_send(());
    }
}

impl Woken {
    /// The next wake-up, with the message of a gap noted since the last one; `None` once the
    /// watch is gone.
    pub(super) async fn next(&mut self) -> Option<Option<String>> {
        self.rx.recv().await?;
        Some(self.gap.lock().unwrap_or_else(|p| p.into_inner()).take())
    }
}

/// A mapping's watch, set up again when the directory at its root is no longer the one
/// watched: a watch follows the directory it was set on, so a root deleted and made again,
/// or replaced by a copy holding the same marker (restored from a backup), would otherwise
/// go unwatched for as long as the mapping runs; and a root missing at start had no watch.
#[derive(Default)]
pub(super) struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    /// The directory the watch was set up on, by device and inode (`Some(None)`: it could
    /// not be opened); `None` before the first set-up.
    watched: Option<Option<(u64, u64)>>,
}

impl Watch {
    /// Sets the watch up on `root` (off the runtime's workers), unless it is already set up
    /// on `now`, the directory there as the caller opened it (by [`super::beneath::DirHandle::identity`];
    /// `None`: not opened). Notifications go to `wakes`. Returns what to tell the user when
    /// the new watch does not cover the whole tree, or could not be set up.
    pub(super) async fn ensure(
        &mut self,
        root: &Path,
        now: Option<(u64, u64)>,
        wakes: &Wakes,
    ) -> Option<String> {
        if self.watched == Some(now) {
            return None;
        }
        // The old watch's resources go first: a limit on watches counts them.
        self.watcher = None;
        self.watched = Some(now);
        let (at, wakes) = (root.to_owned(), wakes.clone());
        let started = tokio::task::spawn_blocking(move || {
            start(&at, move |res: notify::Result<notify::Event>| {
                wakes.note(&res)
            })
        })
        .await;
        match started {
            Ok(started) => {
                self.watcher = started.watcher;
                started.gap
            }
            Err(e) => Some(format!("file-system notifications: {e}")),
        }
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
    fn a_directory_changed_all_the_time_is_not_rescanned_back_to_back() {
        use tokio::time::Instant;
        let s = Duration::from_secs;
        let options = crate::mapping::MappingOptions::default()
            .with_debounce(Duration::from_millis(100))
            .with_rescan_interval(s(60));
        let t0 = Instant::now();
        // No pass yet, or a short one: the debounce.
        assert_eq!(pass_after(t0, &options, None), t0 + options.debounce);
        let short = Some((t0, Duration::from_millis(10)));
        assert_eq!(pass_after(t0, &options, short), t0 + options.debounce);
        // A pass of 2 s that has just ended: the next waits 8 s after it.
        let long = Some((t0, s(2)));
        assert_eq!(pass_after(t0, &options, long), t0 + s(8));
        assert_eq!(pass_after(t0 + s(3), &options, long), t0 + s(8));
        // Long after it: the debounce only.
        assert_eq!(
            pass_after(t0 + s(60), &options, long),
            t0 + s(60) + options.debounce
        );
        // Never later than the periodic rescan would come.
        let huge = Some((t0, s(3600)));
        assert_eq!(pass_after(t0, &options, huge), t0 + s(60));
        let endless = Some((t0, Duration::MAX));
        assert!(pass_after(t0, &options, endless) <= t0 + s(60));
    }

    /// A flood of notifications while the mapping is busy leaves one wake-up pending, not
    /// one per notification; a gap noted in the flood is still told, once.
    #[tokio::test]
    async fn a_flood_of_notifications_queues_one_wake_up_and_keeps_the_gap() {
        use notify::event::CreateKind;
        use notify::{Event, EventKind};
        let (wakes, mut woken) = wakes();
        let made = Ok(Event::new(EventKind::Create(CreateKind::File)));
        for i in 0..100_000 {
            wakes.note(&made);
            if i == 50_000 {
                wakes.note(&Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)));
            }
        }
        let gap = woken.next().await.expect("a wake-up");
        assert!(gap.is_some_and(|g| g.contains("limit on watched directories")));
        assert!(woken.rx.try_recv().is_err(), "more than one wake-up queued");
        // Reads wake nothing; a change after the wake-up wakes again, without the gap.
        let read = Ok(Event::new(EventKind::Access(
            notify::event::AccessKind::Open(notify::event::AccessMode::Any),
        )));
        wakes.note(&read);
        assert!(woken.rx.try_recv().is_err());
        wakes.note(&made);
        assert_eq!(woken.next().await, Some(None));
        drop(wakes);
        assert_eq!(woken.next().await, None, "the watch is gone");
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
