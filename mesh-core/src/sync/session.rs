//! The syncing side of the protocol, as a sans-I/O state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::{CoreError, Result};
use crate::feedsync::MergeOutcome;
use crate::id::{EntryId, RemoteId, ReplicaId};
use crate::model::{names, FeedKey};
use crate::replica::{MergeReport, Replica};
use crate::store::{Cursor, Store, StoreTxn, SyncState};
use crate::sync::guard::{self, Pusher};
use crate::sync::message::{
    Epoch, Prepared, PushResult, RawEntry, Request, Response, MAX_CONTINUED_EPOCHS, MAX_ONLY,
    MAX_PAGE, MAX_PAGE_BYTES,
};

/// Which feeds a session syncs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FeedFilter {
    /// Every feed either side holds.
    #[default]
    All,
    /// Only these feeds.
    Only(BTreeSet<FeedKey>),
}

impl FeedFilter {
    fn accepts(&self, feed: &FeedKey) -> bool {
        match self {
            FeedFilter::All => true,
            FeedFilter::Only(set) => set.contains(feed),
        }
    }
}

/// How a [`SyncSession`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The remote's name; cursors are kept under it.
    pub remote: RemoteId,
    /// The feeds to sync.
    pub feeds: FeedFilter,
    /// Entries per pull or push message (1 to [`MAX_PAGE`]).
    pub page_size: u32,
    /// Pull the remote's changes.
    pub pull: bool,
    /// Push local changes.
    pub push: bool,
    /// Skip the `feeds` request of a targeted session ([`FeedFilter::Only`]): what an earlier
    /// session learned of the remote. Used only when every feed's stored cursors were kept
    /// under that name; otherwise the session asks `feeds` as usual.
    pub known: Option<KnownRemote>,
    /// Ask the remote for the certificates of the devices whose versions this replica may
    /// receive ([`Request::Feeds::certificates`]): for a replica that judges pages from peers
    /// or serves them.
    pub certificates: bool,
}

/// What a syncing replica knows of its remote without asking (see [`SessionConfig::known`]).
///
/// A session with it pushes each targeted feed's local changes and pulls only the feeds whose
/// remote head it was told (a notification carries the feed and its head): the remote's
/// other changes are announced by notifications of their own. The caller is responsible for
/// the name being current: a replica with a change notification stream uses it only while
/// the stream that was open during the session that learned the name stays open, since a
/// remote that restarts (and so may have been restored from an older copy, in a new epoch)
/// ends every stream; the full session that follows a reopened stream checks the epoch again
/// and reports [`SessionEvent::RemoteReset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRemote {
    /// The name the cursors are kept under ([`SyncSession::remote_replica`] of the session
    /// that asked `feeds`).
    pub replica: ReplicaId,
    /// Remote heads announced since: the feeds to pull, and up to where.
    pub heads: BTreeMap<FeedKey, Cursor>,
}

impl SessionConfig {
    /// Both directions, every feed, pages of [`MAX_PAGE`](super::MAX_PAGE) entries (2,000)
    /// at most: the most a responder gives, and fewer durable commits on each side than
    /// smaller pages (see `docs/benchmarks.md`, thirty-first and thirty-second sessions).
    pub fn new(remote: RemoteId) -> Self {
        SessionConfig {
            remote,
            feeds: FeedFilter::All,
            page_size: super::MAX_PAGE,
            pull: true,
            push: true,
            known: None,
            certificates: false,
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request and pass the response to [`SyncSession::receive`].
    Send(Request),
    /// The session is over: both sides were caught up when it ended.
    Done(SyncReport),
}

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Feeds looked at.
    pub feeds: usize,
    /// Requests sent.
    pub requests: usize,
    /// Entries received from the remote.
    pub received: usize,
    /// Entries sent to the remote.
    pub sent: usize,
    /// Local merge outcomes of received entries.
    pub added: usize,
    /// See `added`.
    pub updated: usize,
    /// See `added`.
    pub conflicts: usize,
    /// See `added`.
    pub unchanged: usize,
    /// Received entries this replica refused (see [`SessionEvent::Rejected`]).
    pub rejected: usize,
}

/// Something the session did that an application may want to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A received entry was merged locally.
    Merged {
        /// The feed.
        feed: FeedKey,
        /// What happened.
        report: MergeReport,
    },
    /// A received entry was refused here and left out: the remote relayed a version that
    /// fails the item-shape limits or its signatures, or that its signer may not write (see
    /// [`SyncSession::receive_from`]).
    Rejected {
        /// The feed.
        feed: FeedKey,
        /// The entry.
        id: EntryId,
        /// The refusal's stable error code.
        code: String,
        /// Why (readable, not stable).
        reason: String,
    },
    /// The remote acknowledged a pushed entry.
    Acknowledged {
        /// The feed.
        feed: FeedKey,
        /// What the remote made of it.
        result: PushResult,
    },
    /// The remote's change log is not the one the stored cursors were issued for: it was
    /// restored from an older copy, it crashed mid-epoch, or it is another replica under the
    /// same name. The session starts over with it on `feeds` feeds: it pulls everything the
    /// remote holds (what is already here merges as unchanged) and offers everything held
    /// here (what the remote has merges as unchanged there), so nothing written on either side
    /// is lost. Not reported for a first sync.
    RemoteReset {
        /// The name the stored cursors were kept under.
        previous: ReplicaId,
        /// The remote's replica (and epoch) now.
        now: ReplicaId,
        /// How many feeds start over.
        feeds: usize,
    },
}

#[derive(Debug)]
struct FeedWork {
    feed: FeedKey,
    state: SyncState,
    remote_head: Option<Cursor>,
    pull_done: bool,
    push_done: bool,
}

/// Where a push page handed out by [`SyncSession::push_ahead`] ends: what the page after it
/// starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushPlace {
    next: Cursor,
    more: bool,
}

#[derive(Debug)]
enum Phase {
    Start,
    AwaitFeeds,
    Work,
    AwaitPull {
        since: Cursor,
    },
    AwaitPush {
        upto: Cursor,
        more: bool,
        sent: usize,
    },
    Done,
}

/// One sync between the local replica and a remote: it says which request to send next and
/// absorbs the responses, keeping cursors in the local store (in the same transaction as the
/// data they cover), so a session cut off at any point resumes where it stopped.
///
/// The session never does I/O; any transport moves its [`Request`]s and [`Response`]s.
///
/// ```
/// use mesh_core::replica::Replica;
/// use mesh_core::store::MemoryStore;
/// use mesh_core::sync::{respond, SessionConfig, Step, SyncSession};
///
/// let mut local = Replica::new(MemoryStore::new("laptop".parse().unwrap()));
/// let mut hub = Replica::new(MemoryStore::new("hub".parse().unwrap()));
/// let mut session = SyncSession::new(SessionConfig::new("hub".parse().unwrap()));
/// let report = loop {
///     match session.poll(&mut local).unwrap() {
///         Step::Send(request) => {
///             let response = respond(&mut hub, request).unwrap();
///             session.receive(&mut local, response).unwrap();
///         }
///         Step::Done(report) => break report,
///     }
/// };
/// assert_eq!(report.received, 0);
/// ```
#[derive(Debug)]
pub struct SyncSession {
    config: SessionConfig,
    phase: Phase,
    remote_replica: Option<ReplicaId>,
    queue: VecDeque<FeedWork>,
    report: SyncReport,
    unsaved: Unsaved,
}

/// Cursor moves not yet written: they are written together (at the end of the session, or
/// every [`FLUSH_EVERY`] moves), not one transaction each. Losing them to a crash only means
/// asking for, or sending, a page again.
#[derive(Debug, Default)]
struct Unsaved {
    states: BTreeMap<FeedKey, SyncState>,
    moves: usize,
}

impl Unsaved {
    fn defer<S: Store>(
        &mut self,
        local: &mut Replica<S>,
        remote: &RemoteId,
        feed: FeedKey,
        state: SyncState,
    ) -> Result<()> {
        self.states.insert(feed, state);
        self.moves += 1;
        if self.moves >= FLUSH_EVERY {
            self.flush(local, remote)?;
        }
        Ok(())
    }

    fn flush<S: Store>(&mut self, local: &mut Replica<S>, remote: &RemoteId) -> Result<()> {
        if !self.states.is_empty() {
            // (Not waiting for the disk: losing cursor moves to a crash costs a page again.)
            let mut tx = local.store_mut().begin_relaxed()?;
            for (feed, state) in &self.states {
                tx.set_sync_state(remote, feed, state)?;
            }
            tx.commit()?;
            self.states.clear();
        }
        self.moves = 0;
        Ok(())
    }
}

/// How many deferred cursor moves a session keeps before writing them.
const FLUSH_EVERY: usize = 16;

impl SyncSession {
    /// A session that has not sent anything yet.
    pub fn new(mut config: SessionConfig) -> Self {
        config.page_size = config.page_size.clamp(1, MAX_PAGE);
        SyncSession {
            config,
            phase: Phase::Start,
            remote_replica: None,
            queue: VecDeque::new(),
            report: SyncReport::default(),
            unsaved: Unsaved::default(),
        }
    }

    /// The remote's replica id, once known.
    pub fn remote_replica(&self) -> Option<&ReplicaId> {
        self.remote_replica.as_ref()
    }

    /// Where the session's pull of `feed` ends, while it pulls that feed: the remote's head it
    /// was told (by the `feeds` answer or [`SessionConfig::known`]). The session asks for no
    /// page that starts there or after it, even when an answer says more changes follow (those
    /// are for a later session), so a caller asking for pages ahead has no use for them
    /// either. `None` when the session is not pulling `feed`.
    pub fn pull_ends(&self, feed: &FeedKey) -> Option<Cursor> {
        match self.queue.front() {
            Some(w) if &w.feed == feed && !w.pull_done => w.remote_head,
            _ => None,
        }
    }

    /// Counters so far.
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    /// Whether the session awaits a response.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self.phase,
            Phase::AwaitFeeds | Phase::AwaitPull { .. } | Phase::AwaitPush { .. }
        )
    }

    /// What to do next. Call again after each [`SyncSession::receive`]; calling while a
    /// response is awaited is a protocol error.
    pub fn poll<S: Store>(&mut self, local: &mut Replica<S>) -> Result<Step> {
        match self.phase {
            Phase::Start => {
                if let Some(known) = self.config.known.take() {
                    if self.start_known(local, known)? {
                        self.phase = Phase::Work;
                        return self.next_work(local);
                    }
                }
                self.phase = Phase::AwaitFeeds;
                // Past what a responder answers by name, ask about every feed: the answer
                // is filtered here all the same.
                let only = match &self.config.feeds {
                    FeedFilter::Only(set) if set.len() <= MAX_ONLY => {
                        Some(set.iter().cloned().collect())
                    }
                    _ => None,
                };
                Ok(self.send(Request::Feeds {
                    from: local.id(),
                    only,
                    certificates: self.config.certificates,
                }))
            }
            Phase::Work => self.next_work(local),
            Phase::Done => Ok(Step::Done(self.report.clone())),
            _ => Err(CoreError::Protocol(
                "poll called while a response is awaited".into(),
            )),
        }
    }

    fn send(&mut self, r: Request) -> Step {
        self.report.requests += 1;
        Step::Send(r)
    }

    fn remote(&self) -> Result<ReplicaId> {
        self.remote_replica
            .clone()
            .ok_or_else(|| CoreError::Protocol("the remote's replica id is not known yet".into()))
    }

    fn next_work<S: Store>(&mut self, local: &mut Replica<S>) -> Result<Step> {
        let remote = self.remote()?;
        let limit = self.config.page_size;
        while let Some(w) = self.queue.front_mut() {
            if !w.pull_done {
                let since = w.state.pulled;
                let req = Request::Pull {
                    from: local.id(),
                    feed: w.feed.clone(),
                    since,
                    limit,
                };
                self.phase = Phase::AwaitPull { since };
                return Ok(self.send(req));
            }
            if !w.push_done {
                let page = push_page(local, &w.feed, w.state.pushed, limit, &remote)?;
                if page.changes.is_empty() {
                    // Everything examined came from the remote: just move the cursor.
                    if page.next > w.state.pushed {
                        w.state.pushed = page.next;
                        let (feed, state) = (w.feed.clone(), w.state.clone());
                        self.unsaved
                            .defer(local, &self.config.remote, feed, state)?;
                    }
                    if !page.more {
                        w.push_done = true;
                    }
                    continue;
                }
                let (sent, upto, more) = (page.changes.len(), page.next, page.more);
                let req = push_of(local, &w.feed, page);
                self.phase = Phase::AwaitPush { upto, more, sent };
                return Ok(self.send(req));
            }
            self.queue.pop_front();
        }
        self.unsaved.flush(local, &self.config.remote)?;
        self.phase = Phase::Done;
        Ok(Step::Done(self.report.clone()))
    }

    /// The push the session will ask for next, should the push it awaits be acknowledged as
    /// expected and `local` not change meanwhile: the next page of the same feed, when one
    /// follows. A transport may send it before the acknowledgement arrives (pipelining), and
    /// hand its answer to the session once [`SyncSession::poll`] asks for that very request;
    /// the cursor still moves only as acknowledgements are received, in order. `None` while
    /// no push is awaited, when the feed's last page is awaited, or when what follows holds
    /// only changes the remote sent (the session moves its cursor over them without a push).
    ///
    /// Sending a push early is harmless even when the session then asks for something else
    /// (a local write changed the page): the versions were this replica's, and merging
    /// them again, or after newer ones, changes nothing. Pages of a feed whose entries
    /// depend on each other's order (`members`, `info`) are the caller's to keep in order.
    pub fn next_push<S: Store>(&self, local: &Replica<S>) -> Result<Option<Request>> {
        Ok(self.push_ahead(local, None)?.map(|(request, _)| request))
    }

    /// [`SyncSession::next_push`] for a deeper pipeline: the push after the one that ends at
    /// `after` (a place this method returned, for a push sent ahead), or after the awaited push
    /// when `after` is `None`, with the place where it ends. Each is the request the session
    /// will ask for in its turn, should the pushes before it be acknowledged as expected and
    /// `local` not change meanwhile.
    pub fn push_ahead<S: Store>(
        &self,
        local: &Replica<S>,
        after: Option<PushPlace>,
    ) -> Result<Option<(Request, PushPlace)>> {
        let Phase::AwaitPush { upto, more, .. } = self.phase else {
            return Ok(None);
        };
        let from = after.unwrap_or(PushPlace { next: upto, more });
        if !from.more {
            return Ok(None);
        }
        let (Some(w), Some(remote)) = (self.queue.front(), self.remote_replica.as_ref()) else {
            return Ok(None);
        };
        let page = push_page(local, &w.feed, from.next, self.config.page_size, remote)?;
        if page.changes.is_empty() {
            return Ok(None);
        }
        let place = PushPlace {
            next: page.next,
            more: page.more,
        };
        Ok(Some((push_of(local, &w.feed, page), place)))
    }

    /// Absorbs the response to the request last returned by [`SyncSession::poll`]. Received
    /// entries are merged into `local` with the new cursor in one transaction, unchecked: for
    /// a remote whose word is trusted (the mesh's authority, which checked every version when
    /// it was pushed to it). Entries from any other remote go through
    /// [`SyncSession::receive_from`].
    pub fn receive<S: Store>(
        &mut self,
        local: &mut Replica<S>,
        response: impl Into<Prepared>,
    ) -> Result<Vec<SessionEvent>> {
        self.receive_from(local, response, None)
    }

    /// [`SyncSession::receive`], with received entries judged as a push by `relayer` when one
    /// is given: the remote (a peer) is as hostile as any pusher, so every entry is held to
    /// the item-shape limits, its signatures are checked against `relayer`'s keyring (every
    /// history item this replica does not hold, in every version), and every version the
    /// merge would newly store must be a write its signer's role allows here
    /// ([`guard::push`](crate::sync::guard::push)); items by endpoints the keyring does not
    /// know count as the relaying user's writes. A refused entry is left out and reported as
    /// [`SessionEvent::Rejected`]; the rest merge. The cursor moves past the page once what
    /// was accepted is merged (a crash in between pulls the page again, which merges as
    /// unchanged).
    ///
    /// A response [`Prepared::encoded`] has its entries stored as the JSON made for them where
    /// the merge keeps them as they came.
    pub fn receive_from<S: Store>(
        &mut self,
        local: &mut Replica<S>,
        response: impl Into<Prepared>,
        relayer: Option<Pusher<'_>>,
    ) -> Result<Vec<SessionEvent>> {
        let (response, json) = response.into().into_parts();
        match (&self.phase, response) {
            (
                Phase::AwaitFeeds,
                Response::Feeds {
                    replica,
                    feeds,
                    epoch,
                    // The caller takes them before: only it knows the pinned authority.
                    revocations: _,
                    certificates: _,
                },
            ) => {
                let events = self.start_feeds(local, replica, epoch, feeds)?;
                self.phase = Phase::Work;
                Ok(events)
            }
            (
                &Phase::AwaitPull { since },
                Response::Changes {
                    feed,
                    entries,
                    next,
                    more,
                },
            ) => {
                let remote = self.remote()?;
                let w = current(&mut self.queue, &feed)?;
                if next < since || (more && next == since && entries.is_empty()) {
                    return Err(CoreError::Protocol(format!(
                        "pull of {feed} after {since} answered with cursor {next} and no progress"
                    )));
                }
                self.report.received += entries.len();
                let mut state = w.state.clone();
                state.pulled = next;
                let reached_head = w.remote_head.is_some_and(|h| next >= h);
                if !more || reached_head {
                    w.pull_done = true;
                }
                let mut rejected = Vec::new();
                let reports = if entries.is_empty() {
                    // Only the cursor moved (everything examined came from us).
                    w.state = state.clone();
                    self.unsaved
                        .defer(local, &self.config.remote, feed.clone(), state)?;
                    Vec::new()
                } else if let Some(relayer) = relayer.map(Pusher::pulled) {
                    let ids: Vec<EntryId> = entries.iter().map(|e| e.sync.id.clone()).collect();
                    let entries = Prepared::rejoin(entries, json);
                    let judged = guard::push(local, relayer, Some(&remote), &feed, entries)?;
                    let mut reports = Vec::with_capacity(judged.len());
                    for (id, j) in ids.into_iter().zip(judged) {
                        match j.refused {
                            Some(why) => rejected.push(SessionEvent::Rejected {
                                feed: feed.clone(),
                                id,
                                code: why.code().as_str().to_string(),
                                reason: why.to_string(),
                            }),
                            None => reports.push(MergeReport {
                                id,
                                outcome: j.outcome,
                                seq: j.seq,
                                deleted: j.deleted,
                                resolved: j.resolved,
                            }),
                        }
                    }
                    w.state = state.clone();
                    self.unsaved
                        .defer(local, &self.config.remote, feed.clone(), state)?;
                    reports
                } else {
                    let reports = local.merge_batch_with_state(
                        &feed,
                        Prepared::rejoin(entries, json),
                        Some(&remote),
                        Some((&self.config.remote, &state)),
                    )?;
                    w.state = state;
                    self.unsaved.states.remove(&feed);
                    reports
                };
                for r in &reports {
                    match r.outcome {
                        MergeOutcome::Added => self.report.added += 1,
                        MergeOutcome::Updated => self.report.updated += 1,
                        MergeOutcome::Conflict => self.report.conflicts += 1,
                        MergeOutcome::Unchanged => self.report.unchanged += 1,
                    }
                }
                self.report.rejected += rejected.len();
                self.phase = Phase::Work;
                Ok(reports
                    .into_iter()
                    .map(|report| SessionEvent::Merged {
                        feed: feed.clone(),
                        report,
                    })
                    .chain(rejected)
                    .collect())
            }
            (&Phase::AwaitPush { upto, more, sent }, Response::Pushed { feed, results }) => {
                if results.len() != sent {
                    return Err(CoreError::Protocol(format!(
                        "push of {sent} entries to {feed} acknowledged {}",
                        results.len()
                    )));
                }
                let w = current(&mut self.queue, &feed)?;
                w.state.pushed = upto;
                if !more {
                    w.push_done = true;
                }
                let state = w.state.clone();
                self.unsaved
                    .defer(local, &self.config.remote, feed.clone(), state)?;
                self.report.sent += sent;
                self.phase = Phase::Work;
                Ok(results
                    .into_iter()
                    .map(|result| SessionEvent::Acknowledged {
                        feed: feed.clone(),
                        result,
                    })
                    .collect())
            }
            (phase, response) => Err(CoreError::Protocol(format!(
                "unexpected {} response while {}",
                response_name(&response),
                phase_name(phase)
            ))),
        }
    }

    /// Queues the targeted feeds without asking `feeds`, when all their cursors were kept
    /// under `known.replica`; `false` (nothing queued) otherwise.
    fn start_known<S: Store>(
        &mut self,
        local: &mut Replica<S>,
        known: KnownRemote,
    ) -> Result<bool> {
        let FeedFilter::Only(set) = &self.config.feeds else {
            return Ok(false);
        };
        let mut queue = VecDeque::with_capacity(set.len());
        for feed in set {
            let state = local.store().sync_state(&self.config.remote, feed)?;
            if state.remote_replica.as_ref() != Some(&known.replica) {
                return Ok(false);
            }
            let remote_head = known.heads.get(feed).copied();
            let local_head = local.store().head(feed)?;
            queue.push_back(FeedWork {
                feed: feed.clone(),
                pull_done: !self.config.pull || remote_head.is_none_or(|h| h <= state.pulled),
                push_done: !self.config.push || local_head <= state.pushed,
                state,
                remote_head,
            });
        }
        self.report.feeds += queue.len();
        self.queue = queue;
        self.remote_replica = Some(known.replica);
        Ok(true)
    }

    fn start_feeds<S: Store>(
        &mut self,
        local: &mut Replica<S>,
        replica: ReplicaId,
        epoch: Option<Epoch>,
        remote_feeds: Vec<crate::store::FeedHead>,
    ) -> Result<Vec<SessionEvent>> {
        // Cursors are kept under the remote's replica id and, when it has epochs, the epoch
        // they were issued in; those of an epoch it continues stay valid.
        let (replica, continued) = match epoch {
            None => (replica, Vec::new()),
            Some(e) => {
                if !Epoch::valid_id(&e.id)
                    || e.continues.len() > MAX_CONTINUED_EPOCHS
                    || !e.continues.iter().all(|c| Epoch::valid_id(c))
                {
                    return Err(CoreError::Protocol(format!(
                        "the remote announced a malformed epoch ({} continued)",
                        e.continues.len()
                    )));
                }
                let continued = e
                    .continues
                    .iter()
                    .map(|c| Epoch::remote_name(&replica, c))
                    .collect::<Result<Vec<_>>>()?;
                (Epoch::remote_name(&replica, &e.id)?, continued)
            }
        };
        let mut reset: Option<(ReplicaId, usize)> = None;
        let mut heads: BTreeMap<FeedKey, (Option<Cursor>, Cursor)> = BTreeMap::new();
        for h in remote_feeds {
            if self.config.feeds.accepts(&h.feed) {
                heads.entry(h.feed).or_insert((None, Cursor::ZERO)).0 = Some(h.head);
            }
        }
        for h in local.store().feeds()? {
            if self.config.feeds.accepts(&h.feed) {
                heads.entry(h.feed).or_insert((None, Cursor::ZERO)).1 = h.head;
            }
        }
        // Membership first: what may be read or written in a folder depends on it.
        let mut heads: Vec<_> = heads.into_iter().collect();
        heads.sort_by_key(|(feed, _)| match feed.name.as_str() {
            names::MEMBERS => 0,
            names::INFO => 1,
            _ => 2,
        });
        for (feed, (remote_head, local_head)) in heads {
            let mut state = local.store().sync_state(&self.config.remote, &feed)?;
            match &state.remote_replica {
                Some(r) if r == &replica => {}
                Some(r) if continued.contains(r) => {
                    // An epoch that ended cleanly: its positions still name the same changes.
                    state.remote_replica = Some(replica.clone());
                }
                previous => {
                    if let Some(p) = previous {
                        let r = reset.get_or_insert_with(|| (p.clone(), 0));
                        r.1 += 1;
                    }
                    // A different remote replica or epoch (or a first sync): its cursors mean
                    // nothing here, and it may lack everything we pushed to its predecessor.
                    state = SyncState {
                        remote_replica: Some(replica.clone()),
                        pulled: Cursor::ZERO,
                        pushed: Cursor::ZERO,
                    };
                }
            }
            let pull_done = !self.config.pull || remote_head.is_none_or(|h| h <= state.pulled);
            let push_done = !self.config.push || local_head <= state.pushed;
            self.report.feeds += 1;
            self.queue.push_back(FeedWork {
                feed,
                state,
                remote_head,
                pull_done,
                push_done,
            });
        }
        let events = reset
            .map(|(previous, feeds)| SessionEvent::RemoteReset {
                previous,
                now: replica.clone(),
                feeds,
            })
            .into_iter()
            .collect();
        self.remote_replica = Some(replica);
        Ok(events)
    }
}

/// The page of `feed`'s local changes after `since` that a push to `remote` sends: those
/// whose latest write came from `remote` are passed over (it has them).
fn push_page<S: Store>(
    local: &Replica<S>,
    feed: &FeedKey,
    since: Cursor,
    limit: u32,
    remote: &ReplicaId,
) -> Result<crate::store::EncodedPage> {
    Ok(local
        .store()
        .encoded_changes_since(feed, since, limit as usize, Some(remote))?
        .within(MAX_PAGE_BYTES))
}

/// The push that sends `page` of `feed`: the entries as the store keeps them, not decoded
/// and encoded again.
fn push_of<S: Store>(
    local: &Replica<S>,
    feed: &FeedKey,
    page: crate::store::EncodedPage,
) -> Request {
    Request::PushEncoded {
        from: local.id(),
        feed: feed.clone(),
        entries: page
            .changes
            .into_iter()
            .map(|c| RawEntry::new(c.entry))
            .collect(),
    }
}

fn current<'q>(queue: &'q mut VecDeque<FeedWork>, feed: &FeedKey) -> Result<&'q mut FeedWork> {
    match queue.front_mut() {
        Some(w) if &w.feed == feed => Ok(w),
        _ => Err(CoreError::Protocol(format!(
            "response for feed {feed}, which was not asked about"
        ))),
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Feeds { .. } => "feeds",
        Response::Changes { .. } => "changes",
        Response::Pushed { .. } => "pushed",
    }
}

fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Start => "not started",
        Phase::AwaitFeeds => "awaiting feeds",
        Phase::Work => "not awaiting a response",
        Phase::AwaitPull { .. } => "awaiting changes",
        Phase::AwaitPush { .. } => "awaiting a push acknowledgement",
        Phase::Done => "done",
    }
}
