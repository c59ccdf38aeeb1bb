//! The background sync engine: one task per remote.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use mesh_core::blob::ChunkHash;
use mesh_core::feedsync::MergeOutcome;
use mesh_core::id::{DeviceId, EntryId, FolderId, RemoteId, ReplicaId, UserId};
use mesh_core::model::{names, Entry, FeedKey, InvitationState, MediaRef, Member, Scope};
use mesh_core::replica::Actor;
use mesh_core::store::Cursor;
use mesh_core::store::Store;
use mesh_core::sync::guard::Pusher;
use mesh_core::sync::{
    FeedFilter, KnownRemote, Prepared, PushPlace, Request, Response, SessionConfig, SessionEvent,
    Step, SyncReport, SyncSession,
};
use mesh_core::trust::PublicKey;
use mesh_core::CoreError;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Clock;
use crate::error::{ClientError, ErrorKind, Result, SyncError};
use crate::shared::{Changed, SharedReplica};
use crate::store::DeviceStore;
use crate::sync::dirty::Dirty;
use crate::sync::events::{ChangeKind, ChangeSource, Event};
use crate::sync::notified::Notified;
use crate::sync::status::{pending, StatusCell, Statuses};
use crate::sync::stream::{jittered, Stream, STREAM_SETTLED};
use crate::sync::transfer::{self, Progress, UploadError};
use crate::sync::SyncOptions;
use crate::transport::serve::lock_ring;
use crate::transport::{NextPage, NextPageTold, Notification, Relayer, Transport, TransportError};

enum Cmd {
    SyncNow(oneshot::Sender<Result<SyncReport>>),
}

/// A running engine, owned by the client.
pub(crate) struct EngineHandle {
    pub remote: RemoteId,
    pub transport: Arc<dyn Transport>,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

impl EngineHandle {
    /// Asks for a session now; the receiver completes when one has finished.
    pub fn request_sync(&self) -> Result<oneshot::Receiver<Result<SyncReport>>> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::SyncNow(tx))
            .map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn spawn(
    shared: SharedReplica,
    events: broadcast::Sender<Event>,
    remote: RemoteId,
    transport: Arc<dyn Transport>,
    options: SyncOptions,
    identity: Identity,
    statuses: Statuses,
) -> EngineHandle {
    let (cmd, cmd_rx) = mpsc::unbounded_channel();
    let engine = Engine {
        status: StatusCell::new(statuses, remote.clone(), events.clone()),
        shared,
        events,
        remote: remote.clone(),
        transport: transport.clone(),
        options,
        online: None,
        verified: false,
        membership_changed: false,
        known: Arc::default(),
        identity,
        enrolled: false,
        authority: None,
        known_remote: None,
        last_remote: None,
    };
    let task = tokio::spawn(engine.run(cmd_rx));
    EngineHandle {
        remote,
        transport,
        cmd,
        task,
    }
}

struct Engine {
    shared: SharedReplica,
    events: broadcast::Sender<Event>,
    remote: RemoteId,
    transport: Arc<dyn Transport>,
    options: SyncOptions,
    online: Option<bool>,
    /// This remote's entry in the client's statuses.
    status: StatusCell,
    /// Whether the remote confirmed (or cannot tell) that the credentials are this device's
    /// (`identity`).
    verified: bool,
    /// Whether the running session changed a folder's members on either side.
    membership_changed: bool,
    /// Blob objects the remote is known to hold.
    known: Arc<transfer::KnownObjects>,
    /// Who this device is (the user and device the client is configured for, and its key),
    /// for the credentials check and enrollment.
    identity: Identity,
    /// Whether this device holds a current certificate from the remote's authority (or the
    /// remote has no authority).
    enrolled: bool,
    /// The authority the remote's enrollment answer was checked against (pinned on first
    /// contact): the revocation statements a hub sends count only if it signed them.
    authority: Option<PublicKey>,
    /// The remote's name (replica and epoch) as the last full session found it while the
    /// notification stream open now was already open: targeted sessions skip `feeds` with it
    /// (see [`KnownRemote`]). Forgotten when the stream ends or a sync fails.
    known_remote: Option<ReplicaId>,
    /// The remote's name as the last session used it.
    last_remote: Option<ReplicaId>,
}

/// This device as its engines enroll it with their remotes, and the client's clock (for the
/// writes an engine makes itself: withdrawn invitations).
#[derive(Clone)]
pub(crate) struct Identity {
    pub user: UserId,
    pub device: DeviceId,
    pub key: PublicKey,
    pub clock: Clock,
}

enum Failure {
    Transport(TransportError),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure::Client(ClientError::Core(e))
    }
}

/// How many threads check the signatures of one page a peer sent.
const VERIFY_THREADS: usize = 2;

/// Pushes of a feed sent ahead of the one the session awaits (so up to three travel and merge
/// at once): enough to keep a remote that checks pages on several cores busy while this side
/// reads the next page from its store.
const PUSHES_AHEAD: usize = 2;

/// Pages of a pull asked for ahead of the one being merged: the next one, asked for when the
/// remote says where it starts (see [`ask_ahead`]), and, while a page is merged, the one after
/// that, as soon as the remote says where it starts. So the remote answers one page while
/// this side reads another and merges a third.
const PAGES_AHEAD: usize = 2;

async fn next_notification(
    w: &mut Option<BoxStream<'static, Notification>>,
) -> Option<Notification> {
    match w {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn set_online(&mut self, on: bool) {
        if self.online != Some(on) {
            self.online = Some(on);
            self.status.update(|s| s.online = Some(on));
            let remote = self.remote.clone();
            self.emit(if on {
                Event::Online { remote }
            } else {
                Event::Offline { remote }
            });
        }
    }

    fn backoff(&self, failures: u32, hint: Option<Duration>) -> Duration {
        jittered(
            self.options.backoff_min,
            self.options.backoff_max,
            failures,
            hint,
        )
    }

    /// Tries to (re)open the notification stream. On success a sync follows (to catch up on
    /// what the stream missed while it was down); on failure the next attempt is scheduled.
    async fn reopen(&mut self, stream: &mut Stream) -> bool {
        match self.transport.watch().await {
            Ok(s) => {
                stream.watch = Some(s);
                stream.opened_at = Instant::now();
                stream.retry_at = None;
                // A new stream: the remote may have restarted (in a new epoch) meanwhile.
                self.known_remote = None;
                self.set_online(true);
                true
            }
            Err(TransportError::Unsupported(_)) => {
                stream.supported = false;
                false
            }
            Err(e) => {
                if e.kind() == crate::error::ErrorKind::Offline {
                    self.set_online(false);
                }
                stream.failures = stream.failures.saturating_add(1);
                let delay = if e.is_retryable() {
                    let max = self.options.reconnect_max.max(self.options.backoff_min);
                    jittered(
                        self.options.backoff_min,
                        max,
                        stream.failures,
                        e.retry_after(),
                    )
                } else {
                    self.options.backoff_max
                };
                tracing::debug!(remote = %self.remote, error = %e, ?delay, "notification stream");
                stream.retry_at = Some(Instant::now() + delay);
                false
            }
        }
    }

    async fn run(mut self, mut cmd_rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut local = self.shared.subscribe();
        let auto = self.options.auto;
        // With `auto` off nothing listens to notifications: no stream is kept.
        let mut stream = Stream {
            watch: None,
            supported: auto,
            failures: 0,
            retry_at: None,
            opened_at: Instant::now(),
        };
        let mut dirty = Dirty::default();
        if auto {
            dirty.everything();
        }
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut waiters: Vec<oneshot::Sender<Result<SyncReport>>> = Vec::new();
        loop {
            if stream.supported
                && stream.watch.is_none()
                && stream.retry_at.is_none_or(|t| Instant::now() >= t)
            {
                if self.reopen(&mut stream).await {
                    // The stream may have missed changes while it was down.
                    dirty.everything();
                }
                continue;
            }
            let due = retry_at.is_none_or(|t| Instant::now() >= t);
            if (dirty.is_set() || !waiters.is_empty()) && due {
                let (mut filter, heads, pages) = dirty.take();
                if !waiters.is_empty() {
                    // `sync_now` promises a whole sync.
                    filter = FeedFilter::All;
                }
                let stream_open = stream.watch.is_some();
                match self.sessions(filter, heads, pages, stream_open).await {
                    Ok((report, pending)) => {
                        failures = 0;
                        retry_at = None;
                        self.set_online(true);
                        self.status.synced(pending);
                        for w in waiters.drain(..) {
                            let _ = w.send(Ok(report.clone()));
                        }
                    }
                    Err(f) => {
                        failures = failures.saturating_add(1);
                        self.known_remote = None;
                        let (error, retrying, hint) = match f {
                            Failure::Transport(e) => {
                                if matches!(e, TransportError::Offline(_) | TransportError::Timeout)
                                {
                                    self.set_online(false);
                                    stream.watch = None;
                                }
                                (
                                    ClientError::Transport {
                                        remote: self.remote.to_string(),
                                        error: e.clone(),
                                    },
                                    e.is_retryable(),
                                    e.retry_after(),
                                )
                            }
                            Failure::Client(e) => {
                                let retrying = e.kind() != crate::error::ErrorKind::Mismatch;
                                (e, retrying, None)
                            }
                        };
                        tracing::warn!(remote = %self.remote, %error, "sync failed");
                        let typed = SyncError::from(&error);
                        self.status.update(|s| s.last_error = Some(typed.clone()));
                        self.emit(Event::SyncError {
                            remote: self.remote.clone(),
                            error: typed,
                            retrying,
                        });
                        let delay = if retrying {
                            self.backoff(failures, hint)
                        } else {
                            self.options.backoff_max
                        };
                        retry_at = Some(Instant::now() + delay);
                        if auto {
                            dirty.everything();
                        }
                        for w in waiters.drain(..) {
                            let _ = w.send(Err(error.clone()));
                        }
                    }
                }
                continue;
            }
            let sync_at = retry_at.unwrap_or_else(|| Instant::now() + self.options.poll_interval);
            let mut wake = sync_at;
            if let (true, None, Some(t)) = (stream.supported, &stream.watch, stream.retry_at) {
                // Only to reopen the stream (the top of the loop), not to sync.
                wake = wake.min(t);
            }
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Cmd::SyncNow(tx)) => {
                        waiters.push(tx);
                        retry_at = None;
                    }
                    None => return,
                },
                c = local.recv() => match c {
                    Ok(c) if c.via.as_ref() == Some(&self.remote) => {}
                    Ok(c) if auto => dirty.feed(c.feed),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) if auto => dirty.everything(),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                n = next_notification(&mut stream.watch) => match n {
                    Some(n) => {
                        self.status.announced(n.feed.clone());
                        if auto {
                            dirty.announced(&n);
                        }
                    }
                    None => {
                        // The stream ended (a hub restart, a dropped connection): reopen it
                        // after a short, jittered delay that grows while streams keep ending
                        // young, so that a remote closing every stream at once is not
                        // hammered.
                        stream.watch = None;
                        self.known_remote = None;
                        dirty.forget_pages();
                        if stream.opened_at.elapsed() >= STREAM_SETTLED {
                            stream.failures = 0;
                        }
                        stream.failures = stream.failures.saturating_add(1);
                        let max = self.options.reconnect_max.max(self.options.backoff_min);
                        let delay = jittered(self.options.backoff_min / 2, max, stream.failures - 1, None);
                        stream.retry_at = Some(Instant::now() + delay);
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= sync_at && auto {
                        dirty.everything();
                    }
                }
            }
        }
    }

    /// Runs sessions until one ends without a membership change: a change to a folder's
    /// members (an accepted invitation, say) can make more feeds readable or writable on the
    /// remote, which the next session then syncs. At most three sessions.
    /// Makes sure the remote's authority has certified this device's key before anything
    /// signed is pushed, once per engine run: the answer must come from the authority pinned
    /// on first contact (saved in the store), and renews the certificate.
    async fn enroll(&mut self) -> std::result::Result<(), Failure> {
        if self.enrolled {
            return Ok(());
        }
        let remote = self.remote.clone();
        let saved = self
            .shared
            .run(move |r| r.store().enrollment(&remote))
            .await??;
        let id = &self.identity;
        let answer = match self.transport.enroll(&id.device, &id.key).await {
            Ok(answer) => answer,
            // A remote without an authority (a client served directly) checks no signatures.
            Err(TransportError::Unsupported(_)) => {
                self.enrolled = true;
                return Ok(());
            }
            Err(e) => return Err(Failure::Transport(e)),
        };
        answer
            .check(
                &id.user,
                &id.device,
                &id.key,
                saved.as_ref().map(|e| &e.authority),
            )
            .map_err(|e| Failure::Client(e.into()))?;
        self.authority = Some(answer.authority);
        let remote = self.remote.clone();
        self.shared
            .run(move |r| r.store_mut().set_enrollment(&remote, &answer))
            .await??;
        self.enrolled = true;
        Ok(())
    }

    /// Runs sessions as above. A targeted first session skips `feeds` when the remote's name is known (`heads` are
    /// the remote heads notifications announced, `pages` the changes they carried); a whole
    /// one run while the notification stream is open (`stream_open`) makes the name known.
    async fn sessions(
        &mut self,
        filter: FeedFilter,
        heads: BTreeMap<FeedKey, Cursor>,
        mut pages: Notified,
        stream_open: bool,
    ) -> std::result::Result<(SyncReport, u64), Failure> {
        if !self.verified {
            self.verify().await?;
        }
        self.enroll().await?;
        let mut total = SyncReport::default();
        let mut pending = 0;
        for round in 0..3 {
            self.membership_changed = false;
            // After a membership change every feed is looked at: more may be readable now.
            let feeds = if round == 0 {
                filter.clone()
            } else {
                FeedFilter::All
            };
            let known = match (&feeds, &self.known_remote) {
                (FeedFilter::Only(_), Some(replica)) if stream_open => Some(KnownRemote {
                    replica: replica.clone(),
                    heads: heads.clone(),
                }),
                _ => None,
            };
            let whole = feeds == FeedFilter::All;
            // Pages only stand for pulls of the remote they came from, known by name.
            if known.is_none() {
                pages.clear();
            }
            let (r, p) = self.session(feeds, known, &mut pages).await?;
            if whole && stream_open {
                self.known_remote = self.last_remote.clone();
            }
            pending = p;
            total.feeds += r.feeds;
            total.requests += r.requests;
            total.received += r.received;
            total.sent += r.sent;
            total.added += r.added;
            total.updated += r.updated;
            total.conflicts += r.conflicts;
            total.unchanged += r.unchanged;
            if !self.membership_changed {
                break;
            }
        }
        Ok((total, pending))
    }

    /// One session; its report and the local changes still unacknowledged at its end. A pull
    /// from where a page of `pages` starts is answered by that page.
    async fn session(
        &mut self,
        feeds: FeedFilter,
        known: Option<KnownRemote>,
        pages: &mut Notified,
    ) -> std::result::Result<(SyncReport, u64), Failure> {
        let heads = known.as_ref().map(|k| k.heads.clone()).unwrap_or_default();
        let mut config = SessionConfig::new(self.remote.clone());
        config.feeds = feeds;
        config.known = known;
        config.page_size = self.options.page_size;
        // A client that serves or syncs with peers judges relayed versions by their signers'
        // certificates: it asks for those of the devices it may receive versions from.
        config.certificates = self.shared.trust().in_use();
        let mut session = SyncSession::new(config);
        // The store keeps entries as JSON: a pulled page's is made as it is read.
        let encode = self.shared.stores_json();
        // Requests sent ahead, in the order the session will ask for them: the next page of
        // a pull, asked for while this one is merged (see `prefetch`), or the next pushes of
        // a feed, sent while this one is merged remotely (see `SyncSession::push_ahead`),
        // each with where it ends.
        let mut ahead: VecDeque<InFlight> = VecDeque::new();
        // The session's next step when it was taken in the same hand-off to the store's
        // thread as the answer before it (see `Polled`).
        let mut polled: Option<Polled> = None;
        loop {
            let p = match polled.take() {
                Some(p) => p,
                None => {
                    let (fill, remote) = (ahead.is_empty(), self.remote.clone());
                    // A pull that a notification answers is merged in the same hand-off as
                    // the poll that asks for it. Only from a remote whose word is taken as
                    // it comes (a hub): a peer's pages are judged first, on the way below.
                    let notified = match pages.is_empty() {
                        true => None,
                        false => match self.transport.relayer().await {
                            Ok(None) => Some((std::mem::take(pages), heads.clone())),
                            _ => None,
                        },
                    };
                    if notified.is_some() {
                        // Its notifications came: the remote is online (said before the
                        // changes they carried are reported, as for an answer).
                        self.set_online(true);
                    }
                    let (events, known) = (self.events.clone(), self.known.clone());
                    let (s, p, back) = self
                        .shared
                        .run(move |r| {
                            let mut p = Polled::poll(&mut session, r, fill, &remote);
                            let back = notified.map(|(mut pages, heads)| {
                                if let Ok(Step::Send(request)) = &p.step {
                                    if let Some(response) = pages.answer(request, &heads) {
                                        p.received = Some(Box::new(receive_here(
                                            &mut session,
                                            r,
                                            response,
                                            None,
                                            fill,
                                            &remote,
                                            &events,
                                            &known,
                                        )));
                                    }
                                }
                                pages
                            });
                            (session, p, back)
                        })
                        .await?;
                    session = s;
                    if let Some(back) = back {
                        *pages = back;
                    }
                    p
                }
            };
            if let Some(received) = p.received {
                // The step was a pull that a notification answered, merged in the poll's
                // hand-off.
                self.after_receiving(&session, *received, &mut polled)
                    .await?;
                continue;
            }
            match p.step? {
                Step::Done(report) => {
                    self.last_remote = session.remote_replica().cloned();
                    let pending = match p.pending {
                        Some(pending) => pending?,
                        None => {
                            let remote = self.remote.clone();
                            self.shared
                                .run(move |r| pending(r.store(), &remote))
                                .await??
                        }
                    };
                    self.emit(Event::SyncProgress {
                        remote: self.remote.clone(),
                        sent: report.sent,
                        received: report.received,
                        pending,
                        done: true,
                    });
                    return Ok((report, pending));
                }
                Step::Send(request) => {
                    let pull = PullKey::of(&request);
                    // No page from the remote head the session knows is asked for ahead: the
                    // session stops there.
                    let ends = pull.as_ref().and_then(|p| session.pull_ends(&p.1));
                    let pipelined = pipelines(&request);
                    let answer = match pages.answer(&request, &heads) {
                        // A notification brought this pull's answer.
                        Some(response) => Answer::Notified(response),
                        None => Answer::Remote(match ahead.pop_front() {
                            // Sent ahead, after the blobs it names.
                            Some(p) if p.request == request => p,
                            _ => {
                                // Not what the session asks for: dropping them cancels them.
                                ahead.clear();
                                let blobs = self.blob_upload(&request);
                                InFlight::send(&self.transport, request, None, blobs, encode)
                            }
                        }),
                    };
                    if pipelined {
                        // While this push travels and merges: send the ones after it (after
                        // the last one sent ahead, if any). With none in flight, the poll
                        // above has already found them.
                        let next = match p.ahead {
                            Some(next) if ahead.is_empty() => next,
                            _ => {
                                let ahead_len = ahead.len();
                                let pushed_to = ahead.back().and_then(|f| f.place);
                                let (s, next) = self
                                    .shared
                                    .run(move |r| {
                                        let next = pushes_ahead(&session, r, pushed_to, ahead_len);
                                        (session, next)
                                    })
                                    .await?;
                                session = s;
                                next
                            }
                        };
                        ahead.extend(next?.into_iter().map(|(request, place)| {
                            let blobs = self.blob_upload(&request);
                            InFlight::send(&self.transport, request, Some(place), blobs, encode)
                        }));
                    }
                    let mut answer = answer;
                    if let (Answer::Remote(asked), true) = (&mut answer, ahead.is_empty()) {
                        // The page after this one, asked for as soon as the remote says where
                        // it starts: it travels while this one is read and merged.
                        ahead.extend(ask_ahead(&self.transport, pages, asked, ends).await);
                    }
                    let mut response = match answer {
                        Answer::Notified(response) => Prepared::from(response),
                        Answer::Remote(answer) => answer.answer().await?,
                    };
                    if ahead.is_empty() && !follows_notified(pages, response.response()) {
                        let answer = response.response();
                        ahead.extend(prefetch(&self.transport, pull, answer, encode, ends));
                    }
                    // The remote answered: say so before reporting what it sent.
                    self.set_online(true);
                    // A peer's word is judged like a push; the authority's is not.
                    let relayer = self.transport.relayer().await.map_err(Failure::Transport)?;
                    if let Some(peer) = &relayer {
                        // The revocations the client learns hold for this peer's pages too.
                        self.shared.trust().adopt(&peer.trust);
                    }
                    if let Some((statements, certificates)) = response.take_trust() {
                        self.learn_trust(statements, certificates, relayer.as_ref())
                            .await?;
                    }
                    let (fill, remote) = (ahead.is_empty(), self.remote.clone());
                    let (events, known) = (self.events.clone(), self.known.clone());
                    let merged = self.shared.run(move |r| {
                        let received = receive_here(
                            &mut session,
                            r,
                            response,
                            relayer.as_ref(),
                            fill,
                            &remote,
                            &events,
                            &known,
                        );
                        (session, received)
                    });
                    // While this page merges: the page after the last one asked for, once the
                    // remote says where it starts.
                    let deeper = ask_deeper(&self.transport, pages, &mut ahead, ends);
                    let (merged, deeper) = futures::join!(merged, deeper);
                    ahead.extend(deeper);
                    let (s, received) = merged?;
                    session = s;
                    self.after_receiving(&session, received, &mut polled)
                        .await?;
                }
            }
        }
    }

    /// Acts on an answer merged by [`receive_here`]: `polled` takes the step found after it.
    async fn after_receiving(
        &mut self,
        session: &SyncSession,
        received: Received,
        polled: &mut Option<Polled>,
    ) -> std::result::Result<(), Failure> {
        let (reported, head, next) = received?;
        *polled = next;
        let refused = self.reported(reported, head);
        self.withdraw_invitations(refused).await?;
        let r = session.report();
        self.emit(Event::SyncProgress {
            remote: self.remote.clone(),
            sent: r.sent,
            received: r.received,
            pending: 0,
            done: false,
        });
        Ok(())
    }

    /// Takes the revocation statements and certificates a `feeds` answer carried: those
    /// signed by the authority this remote is judged by (the peer trust's, or the one pinned
    /// at enrollment with a hub; a remote with neither teaches nothing) apply to every peer
    /// trust of the client at once; new revocations are saved and reported.
    async fn learn_trust(
        &mut self,
        statements: Vec<mesh_core::trust::Revocation>,
        certificates: Vec<mesh_core::trust::DeviceCertificate>,
        relayer: Option<&Relayer>,
    ) -> std::result::Result<(), Failure> {
        if statements.is_empty() && certificates.is_empty() {
            return Ok(());
        }
        let pinned = match (relayer, self.authority) {
            (Some(peer), _) => peer.trust.authority(),
            (None, Some(authority)) => authority,
            (None, None) => return Ok(()),
        };
        let registry = self.shared.trust();
        registry.learn_certificates(&pinned, certificates);
        let new = registry.learn(&pinned, statements);
        if new.is_empty() {
            return Ok(());
        }
        let all = registry.revocations();
        self.shared
            .run(move |r| r.store_mut().set_revocations(&all))
            .await??;
        for r in new {
            self.emit(Event::DeviceRevoked {
                user: r.user,
                device: r.device,
                at: r.at,
            });
        }
        Ok(())
    }

    /// Asks the remote whose credentials these are, once: a token of another user or device
    /// would sync someone else's data into this store (or this store's into theirs).
    async fn verify(&mut self) -> std::result::Result<(), Failure> {
        let who = self.transport.whoami().await.map_err(Failure::Transport)?;
        if let Some(who) = who {
            let (user, device) = (&self.identity.user, &self.identity.device);
            if who.user != *user || who.device.as_ref().is_some_and(|d| d != device) {
                let found = match &who.device {
                    Some(d) => format!("user {} (device {d})", who.user),
                    None => format!("user {}", who.user),
                };
                return Err(Failure::Client(ClientError::Mismatch {
                    remote: self.remote.to_string(),
                    expected: format!("user {user} (device {device})"),
                    found,
                }));
            }
        }
        self.verified = true;
        Ok(())
    }

    /// What must be uploaded before `request` is sent: for a push of entries with media
    /// into a folder feed, the blob objects the remote lacks, so that a device that receives
    /// an entry can always fetch its content.
    fn blob_upload(&self, request: &Request) -> Option<BlobUpload> {
        let Scope::Folder(folder) = &pushed_feed(request)?.scope else {
            return None;
        };
        let manifests = pushed_manifests(request);
        (!manifests.is_empty()).then(|| BlobUpload {
            shared: self.shared.clone(),
            transport: self.transport.clone(),
            events: self.events.clone(),
            remote: self.remote.clone(),
            known: self.known.clone(),
            folder: folder.clone(),
            manifests,
        })
    }

    /// Acts on what a response did (its events are out already); returns the member entries
    /// the remote refused because the user they name has no account there.
    fn reported(
        &mut self,
        reported: Reported,
        head: Option<(mesh_core::store::Cursor, mesh_core::model::FeedKey)>,
    ) -> Vec<(FeedKey, EntryId)> {
        if reported.membership_changed {
            self.membership_changed = true;
        }
        if let (true, Some((head, feed))) = (reported.changed, head) {
            self.shared.notify(Changed {
                feed,
                head,
                via: Some(self.remote.clone()),
            });
        }
        reported.unknown_users
    }

    /// Withdraws (deletes) this user's invitations that the remote refused because the
    /// invited user has no account there, so that the local members list does not show a
    /// member the folder will never have. The deletion syncs like any other; a member record
    /// that is no longer an open invitation by this user is left as it is.
    async fn withdraw_invitations(
        &self,
        refused: Vec<(FeedKey, EntryId)>,
    ) -> std::result::Result<(), Failure> {
        if refused.is_empty() {
            return Ok(());
        }
        let actor = Actor::new(self.identity.user.clone(), self.identity.device.clone());
        let now = (self.identity.clock)();
        let withdrawn = self
            .shared
            .run(move |r| {
                let mut out = Vec::new();
                for (feed, id) in refused {
                    let Some(entry) = r.get(&feed, &id)? else {
                        continue;
                    };
                    let open_invitation = !entry.is_deleted()
                        && entry.content.content.decode::<Member>().is_ok_and(|m| {
                            m.state == InvitationState::Invited && m.invited_by == actor.user
                        });
                    if open_invitation {
                        let w = r.delete(&feed, &id, &actor, now)?;
                        out.push((feed, id, w.seq));
                    }
                }
                Ok::<_, CoreError>(out)
            })
            .await??;
        for (feed, id, head) in withdrawn {
            self.shared.notify(Changed {
                feed: feed.clone(),
                head,
                via: None,
            });
            self.emit(Event::EntryChanged {
                feed,
                id,
                kind: ChangeKind::Deleted,
                source: ChangeSource::Local,
            });
        }
        Ok(())
    }
}

/// One poll of a session, with what follows it done in the same hand-off to the store's
/// thread (each hand-off is a thread switch; a one-entry sync used to make five): when the
/// step is a push that pipelines and none is in flight, the pushes to send ahead of it;
/// when the session is done, the local changes still unacknowledged.
struct Polled {
    step: mesh_core::Result<Step>,
    ahead: Option<mesh_core::Result<Vec<(Request, PushPlace)>>>,
    pending: Option<Result<u64>>,
    /// The step's request, answered by a notification and merged in the same hand-off.
    received: Option<Box<Received>>,
}

/// What [`receive_here`] did: what the answer changed, the head of the feed it merged into,
/// and the session's next step (unless the answer refused something).
type Received = mesh_core::Result<(
    Reported,
    Option<(mesh_core::store::Cursor, FeedKey)>,
    Option<Polled>,
)>;

/// Merges `response` (from `relayer`, judged as a push, or from the authority as it comes)
/// into the session on the store's thread; tells the application what changed at once (on
/// `events`), then polls the session for its next step (`fill`: no push in flight).
#[allow(clippy::too_many_arguments)]
fn receive_here(
    session: &mut SyncSession,
    r: &mut mesh_core::replica::Replica<crate::store::ClientStore>,
    response: impl Into<Prepared>,
    relayer: Option<&Relayer>,
    fill: bool,
    remote: &RemoteId,
    events: &broadcast::Sender<Event>,
    known: &transfer::KnownObjects,
) -> Received {
    let evs = match relayer {
        Some(peer) => {
            let ring = lock_ring(peer.trust.keyring());
            let judge = Pusher::new(&peer.user, &*ring).with_threads(VERIFY_THREADS);
            session.receive_from(r, response, Some(judge))
        }
        None => session.receive(r, response),
    }?;
    let head = match evs.first() {
        Some(SessionEvent::Merged { feed, .. }) => {
            r.store().head(feed).ok().map(|h| (h, feed.clone()))
        }
        _ => None,
    };
    let mut reported = Reported::of(evs, remote);
    // Told at once, before the next step is looked for (and, at a session's end, the changes
    // left to push are counted).
    if reported.reset {
        // The objects it was known to hold may be gone with the rest.
        known.forget();
    }
    for e in reported.events.drain(..) {
        let _ = events.send(e);
    }
    // The next step in the same hand-off, unless the answer refused something (refused
    // invitations are withdrawn first: that is a local change the session should see).
    let next = (!reported.rejected).then(|| Polled::poll(session, r, fill, remote));
    Ok((reported, head, next))
}

/// What one response did to the local replica: the events the application is told, and what
/// the engine does after them.
#[derive(Default)]
struct Reported {
    /// In the order they happened.
    events: Vec<Event>,
    /// A folder's members changed: more feeds may be readable or writable now.
    membership_changed: bool,
    /// The remote was reset (restored from a copy).
    reset: bool,
    /// An entry changed here.
    changed: bool,
    /// The remote refused a version (a refused invitation is withdrawn before the session goes
    /// on: that is a local change it should see).
    rejected: bool,
    /// Member entries refused because the user they name has no account on the remote.
    unknown_users: Vec<(FeedKey, EntryId)>,
}

impl Reported {
    /// The events of `evs`, a response from `remote`.
    fn of(evs: Vec<SessionEvent>, remote: &RemoteId) -> Reported {
        let mut out = Reported::default();
        for e in evs {
            match e {
                SessionEvent::Merged { feed, report } => {
                    if report.outcome.changed() && feed.name.as_str() == names::MEMBERS {
                        out.membership_changed = true;
                    }
                    let kind = match report.outcome {
                        MergeOutcome::Unchanged => continue,
                        MergeOutcome::Conflict => ChangeKind::Conflict,
                        _ if report.deleted => ChangeKind::Deleted,
                        // A resolution made elsewhere cleared this entry's conflicts.
                        _ if report.resolved => ChangeKind::Resolved,
                        MergeOutcome::Added => ChangeKind::Added,
                        MergeOutcome::Updated => ChangeKind::Updated,
                    };
                    out.changed = true;
                    out.events.push(Event::EntryChanged {
                        feed,
                        id: report.id,
                        kind,
                        source: ChangeSource::Remote(remote.clone()),
                    });
                }
                SessionEvent::RemoteReset {
                    previous,
                    now,
                    feeds,
                } => {
                    out.reset = true;
                    out.events.push(Event::RemoteReset {
                        remote: remote.clone(),
                        previous: previous.to_string(),
                        now: now.to_string(),
                        feeds,
                    });
                }
                SessionEvent::Rejected {
                    feed,
                    id,
                    code,
                    reason,
                } => {
                    out.rejected = true;
                    out.events.push(Event::Rejected {
                        remote: remote.clone(),
                        feed,
                        id,
                        reason,
                        kind: ErrorKind::of_code(&code).unwrap_or(ErrorKind::PermissionDenied),
                    });
                }
                SessionEvent::Acknowledged { feed, result } => {
                    if result.outcome.changed() && feed.name.as_str() == names::MEMBERS {
                        out.membership_changed = true;
                    }
                    if let Some(reason) = result.refused {
                        let kind = result
                            .code
                            .as_deref()
                            .and_then(ErrorKind::of_code)
                            .unwrap_or(ErrorKind::PermissionDenied);
                        if kind == ErrorKind::NotFound && feed.name.as_str() == names::MEMBERS {
                            out.unknown_users.push((feed.clone(), result.id.clone()));
                        }
                        out.events.push(Event::Refused {
                            remote: remote.clone(),
                            feed,
                            id: result.id,
                            reason,
                            kind,
                        });
                    }
                }
            }
        }
        out
    }
}

impl Polled {
    /// Polls `session`; `fill`: no push is in flight (so the pushes ahead start right after
    /// this one).
    fn poll(
        session: &mut SyncSession,
        r: &mut mesh_core::replica::Replica<crate::store::ClientStore>,
        fill: bool,
        remote: &RemoteId,
    ) -> Polled {
        let step = session.poll(r);
        let (mut ahead, mut left) = (None, None);
        match &step {
            Ok(Step::Send(request)) if fill && pipelines(request) => {
                ahead = Some(pushes_ahead(session, r, None, 0));
            }
            Ok(Step::Done(_)) => left = Some(pending(r.store(), remote)),
            _ => {}
        }
        Polled {
            step,
            ahead,
            pending: left,
            received: None,
        }
    }
}

/// The pushes to send after the one ending at `after` (the session's current one when
/// `None`), up to [`PUSHES_AHEAD`] in flight counting the `in_flight` ones.
fn pushes_ahead(
    session: &SyncSession,
    r: &mesh_core::replica::Replica<crate::store::ClientStore>,
    mut after: Option<PushPlace>,
    in_flight: usize,
) -> mesh_core::Result<Vec<(Request, PushPlace)>> {
    let mut next = Vec::new();
    while in_flight + next.len() < PUSHES_AHEAD {
        match session.push_ahead(r, after)? {
            Some((request, place)) if pipelines(&request) => {
                after = Some(place);
                next.push((request, place));
            }
            _ => break,
        }
    }
    Ok(next)
}

/// Where the answer to a session's request comes from.
enum Answer {
    /// A notification carried it (see [`Notified`]).
    Notified(Response),
    /// The remote, asked now or ahead.
    Remote(InFlight),
}

/// A request on its way: a pull page asked for ahead, a push sent ahead, or the request the
/// session asked for; and its answer to come (the request is cancelled if this is dropped
/// unused: the session ended or failed first).
struct InFlight {
    request: Request,
    /// Where a push sent ahead ends, for the push after it.
    place: Option<PushPlace>,
    /// A pull's: where the page after it starts, if the remote tells before its answer is
    /// read whole (see [`Transport::send_pull`]).
    next: Option<NextPageTold>,
    /// Whether a pull's answer has its entries' JSON made on the task that read it (see
    /// [`Prepared`]), while the page before it is merged: for a store that keeps entries as
    /// JSON.
    encode: bool,
    answer: Option<JoinHandle<std::result::Result<Prepared, Failure>>>,
}

impl InFlight {
    /// Sends `request` (a push sent ahead says where it ends: `place`) on a task of its own:
    /// at once, or once `blobs` are uploaded (the push names them). So a push of files sent
    /// ahead uploads its blobs while the pushes before it travel and merge. A pull's answer
    /// is [`Prepared::encoded`] on that task when `encode` is set.
    fn send(
        transport: &Arc<dyn Transport>,
        request: Request,
        place: Option<PushPlace>,
        blobs: Option<BlobUpload>,
        encode: bool,
    ) -> InFlight {
        let transport = transport.clone();
        let sent = request.clone();
        let (next, told) = match &request {
            Request::Pull { .. } => {
                let (next, told) = NextPage::channel();
                (Some(next), Some(told))
            }
            _ => (None, None),
        };
        InFlight {
            request,
            place,
            next: told,
            encode,
            answer: Some(tokio::spawn(async move {
                if let Some(next) = next {
                    return transport
                        .send_pull(sent, &next)
                        .await
                        .map(|answer| match encode {
                            true => Prepared::encoded(answer),
                            false => Prepared::from(answer),
                        })
                        .map_err(Failure::Transport);
                }
                let answer = match blobs {
                    Some(blobs) => {
                        let push = transport.clone();
                        blobs
                            .run_then(async move {
                                push.send(sent).await.map_err(UploadError::Transport)
                            })
                            .await
                    }
                    None => transport.send(sent).await.map_err(Failure::Transport),
                };
                answer.map(Prepared::from)
            })),
        }
    }

    async fn answer(mut self) -> std::result::Result<Prepared, Failure> {
        let offline = |why: String| Failure::Transport(TransportError::Offline(why));
        match self.answer.take() {
            Some(h) => h
                .await
                .unwrap_or_else(|e| Err(offline(format!("a request in flight ended: {e}")))),
            None => Err(offline("a request in flight was awaited twice".into())),
        }
    }
}

/// The blob objects a push names, to upload (those the remote lacks) before it is sent.
struct BlobUpload {
    shared: SharedReplica,
    transport: Arc<dyn Transport>,
    events: broadcast::Sender<Event>,
    remote: RemoteId,
    known: Arc<transfer::KnownObjects>,
    folder: FolderId,
    manifests: Vec<ChunkHash>,
}

impl BlobUpload {
    /// Uploads the objects, then sends the push (`then`); beside the chunks where the remote
    /// relays blobs (see [`transfer::upload_then`]).
    async fn run_then<T>(
        self,
        then: impl std::future::Future<Output = std::result::Result<T, UploadError>>,
    ) -> std::result::Result<T, Failure> {
        let progress = Progress {
            events: &self.events,
            remote: &self.remote,
            folder: &self.folder,
        };
        let uploaded = transfer::upload_then(
            &self.shared,
            &self.transport,
            &self.folder,
            self.manifests,
            &progress,
            &self.known,
            then,
        )
        .await;
        uploaded.map_err(|e| match e {
            UploadError::Transport(e) => Failure::Transport(e),
            UploadError::Client(e) => Failure::Client(e),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(h) = self.answer.take() {
            h.abort();
        }
    }
}

/// What a pull's successor keeps of it: who asks, the feed and the page size.
struct PullKey(ReplicaId, FeedKey, u32);

impl PullKey {
    /// The key of `request`, if it is a pull.
    fn of(request: &Request) -> Option<PullKey> {
        match request {
            Request::Pull {
                from, feed, limit, ..
            } => Some(PullKey(from.clone(), feed.clone(), *limit)),
            _ => None,
        }
    }

    /// The same pull from `since`, sent on a task of its own; nothing from where the session's
    /// pull ends (`ends`, see [`SyncSession::pull_ends`]) or after it.
    fn send_from(
        self,
        transport: &Arc<dyn Transport>,
        since: Cursor,
        encode: bool,
        ends: Option<Cursor>,
    ) -> Option<InFlight> {
        if ends.is_some_and(|end| since >= end) {
            return None;
        }
        let PullKey(from, feed, limit) = self;
        let request = Request::Pull {
            from,
            feed,
            since,
            limit,
        };
        Some(InFlight::send(transport, request, None, None, encode))
    }
}

/// After the answer to a pull (`pull`) that says more changes follow, asks
/// for the next page at once, so that it travels while this one is merged and saved: the
/// session's next request is that very pull unless it has reached the head it was told
/// (`ends`: nothing is asked for from there), and the cursor still moves only over what is
/// merged (a page fetched ahead and not asked for is dropped). Pulls are reads: a page asked
/// for twice, or in vain, changes nothing.
fn prefetch(
    transport: &Arc<dyn Transport>,
    pull: Option<PullKey>,
    answer: &Response,
    encode: bool,
    ends: Option<Cursor>,
) -> Option<InFlight> {
    let pull = pull?;
    let Response::Changes {
        feed: answered,
        next,
        more: true,
        ..
    } = answer
    else {
        return None;
    };
    if *answered != pull.1 {
        return None;
    }
    pull.send_from(transport, *next, encode, ends)
}

/// Asks for the page after `asked` (a pull in flight) once the remote tells where it starts,
/// before `asked`'s answer is read whole; nothing if it does not tell (see
/// [`Transport::send_pull`]), that page came with a notification, or it starts at or past
/// where the session's pull ends (`ends`, see [`SyncSession::pull_ends`]). A wrong word costs only
/// the page asked in vain: the session's next request is made from the answer, and a page
/// asked for ahead that is not it is dropped unused.
async fn ask_ahead(
    transport: &Arc<dyn Transport>,
    pages: &Notified,
    asked: &mut InFlight,
    ends: Option<Cursor>,
) -> Option<InFlight> {
    let told = asked.next.take()?;
    let pull = PullKey::of(&asked.request)?;
    let since = told.told().await?;
    if pages.has(&pull.1, since) {
        return None;
    }
    pull.send_from(transport, since, asked.encode, ends)
}

/// The page after the last request in flight (`ahead`), asked for once the remote says where
/// it starts, as [`ask_ahead`] does: while the page before them is merged. Nothing when
/// [`PAGES_AHEAD`] pages are in flight already, or the last request is not a pull that the
/// remote tells the next page of (it then waits for that answer at most).
async fn ask_deeper(
    transport: &Arc<dyn Transport>,
    pages: &Notified,
    ahead: &mut VecDeque<InFlight>,
    ends: Option<Cursor>,
) -> Option<InFlight> {
    if ahead.len() >= PAGES_AHEAD {
        return None;
    }
    ask_ahead(transport, pages, ahead.back_mut()?, ends).await
}

/// Whether the page after `answer` (a pull's) came with a notification: it is not asked for
/// ahead.
fn follows_notified(pages: &Notified, answer: &Response) -> bool {
    match answer {
        Response::Changes { feed, next, .. } => pages.has(feed, *next),
        _ => false,
    }
}

/// Whether a push may travel beside the next page of its feed: not for the feeds whose
/// entries are judged by each other (a folder's `members` and `info`: an invitation needs the
/// owner's record merged first). A push that names blobs may: each push's task uploads its
/// blobs before sending it.
fn pipelines(request: &Request) -> bool {
    pushed_feed(request)
        .is_some_and(|feed| !matches!(feed.name.as_str(), names::MEMBERS | names::INFO))
}

/// The feed `request` pushes into, if it is a push.
fn pushed_feed(request: &Request) -> Option<&FeedKey> {
    match request {
        Request::Push { feed, .. } | Request::PushEncoded { feed, .. } => Some(feed),
        _ => None,
    }
}

/// The blob manifests the versions pushed by `request` name. Of a push of stored JSON, only
/// the entries whose JSON holds a `"media"` key somewhere are decoded (a version's medium is
/// written under that key; content that merely holds the word costs a decode, nothing else).
/// An entry whose JSON does not decode names no blobs here: the receiver refuses it (with its
/// whole push) as it reads the request.
fn pushed_manifests(request: &Request) -> Vec<ChunkHash> {
    let hashes =
        |e: &Entry| -> Vec<ChunkHash> { medias(e).filter_map(|m| m.hash.parse().ok()).collect() };
    match request {
        Request::Push { entries, .. } => entries.iter().flat_map(hashes).collect(),
        Request::PushEncoded { entries, .. } => entries
            .iter()
            .filter(|e| e.get().contains("\"media\""))
            .filter_map(|e| e.decode().ok())
            .flat_map(|e| hashes(&e))
            .collect(),
        _ => Vec::new(),
    }
}

/// The blobs the versions of `entry` name.
fn medias(entry: &Entry) -> impl Iterator<Item = &MediaRef> {
    std::iter::once(&entry.content)
        .chain(entry.conflicts.iter().map(|c| &c.content))
        .filter_map(|v| v.media.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::InProcessHub;
    use mesh_core::store::Cursor;

    fn pull(since: u64) -> Request {
        Request::Pull {
            from: "me".parse().unwrap(),
            feed: "folder:f/notes".parse().unwrap(),
            since: Cursor(since),
            limit: 2,
        }
    }

    fn changes(feed: &str, next: u64, more: bool) -> Response {
        Response::Changes {
            feed: feed.parse().unwrap(),
            entries: Vec::new(),
            next: Cursor(next),
            more,
        }
    }

    #[tokio::test]
    async fn the_next_page_is_asked_for_only_when_more_follow_on_the_same_feed() {
        let transport: Arc<dyn Transport> =
            Arc::new(InProcessHub::new().connect("ann".parse().unwrap()));
        let key = PullKey::of;
        let more = changes("folder:f/notes", 7, true);
        let ahead = prefetch(&transport, key(&pull(0)), &more, false, None);
        assert_eq!(ahead.map(|p| p.request.clone()), Some(pull(7)));
        for (answer, why) in [
            (changes("folder:f/notes", 7, false), "the last page"),
            (changes("folder:f/other", 7, true), "another feed's page"),
        ] {
            assert!(
                prefetch(&transport, key(&pull(0)), &answer, false, None).is_none(),
                "{why}"
            );
        }
        // Only after a pull: a push's answer asks for nothing.
        assert!(prefetch(&transport, None, &more, false, None).is_none());
        // Nor from the head the session stops at, or past it.
        for end in [7, 5] {
            let ends = Some(Cursor(end));
            assert!(prefetch(&transport, key(&pull(0)), &more, false, ends).is_none());
        }
        let ends = Some(Cursor(8));
        assert!(prefetch(&transport, key(&pull(0)), &more, false, ends).is_some());
    }

    /// Answers each request as its function says, and tells where a pull's next page starts
    /// (before its answer) when the answer says more follow.
    type Script = dyn Fn(&Request) -> std::result::Result<Response, TransportError> + Send + Sync;
    struct Scripted(Box<Script>);

    #[async_trait::async_trait]
    impl Transport for Scripted {
        async fn send(&self, r: Request) -> std::result::Result<Response, TransportError> {
            (self.0)(&r)
        }
        async fn send_pull(
            &self,
            r: Request,
            next: &crate::transport::NextPage,
        ) -> std::result::Result<Response, TransportError> {
            let answer = (self.0)(&r)?;
            if let Response::Changes {
                next: at,
                more: true,
                ..
            } = &answer
            {
                next.tell(*at);
            }
            Ok(answer)
        }
        async fn watch(
            &self,
        ) -> std::result::Result<futures::stream::BoxStream<'static, Notification>, TransportError>
        {
            Err(TransportError::Unsupported("watch".into()))
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    #[tokio::test]
    async fn two_pages_are_asked_for_ahead_of_the_one_merged() {
        // The page after each pull starts two further on, and more follow.
        let transport: Arc<dyn Transport> = Arc::new(Scripted(Box::new(|r| match r {
            Request::Pull { feed, since, .. } => Ok(Response::Changes {
                feed: feed.clone(),
                entries: Vec::new(),
                next: Cursor(since.0 + 2),
                more: true,
            }),
            _ => Err(TransportError::Unsupported("only pulls".into())),
        })));
        let pages = Notified::default();
        let mut ahead = VecDeque::new();
        let ends = Some(Cursor(5));
        assert!(ask_deeper(&transport, &pages, &mut ahead, ends)
            .await
            .is_none());
        ahead.push_back(InFlight::send(&transport, pull(2), None, None, false));
        let deeper = ask_deeper(&transport, &pages, &mut ahead, ends).await;
        let deeper = deeper.expect("the page after the one in flight is asked for");
        assert_eq!(deeper.request, pull(4));
        ahead.push_back(deeper);
        assert!(
            ask_deeper(&transport, &pages, &mut ahead, ends)
                .await
                .is_none(),
            "no more than {PAGES_AHEAD} ahead"
        );
        // The word is taken once: the page in flight is not asked for again.
        ahead.pop_back();
        assert!(ask_deeper(&transport, &pages, &mut ahead, ends)
            .await
            .is_none());
        // Nothing from where the session's pull ends: the page from 6 would come after it.
        let mut ahead = VecDeque::from([InFlight::send(&transport, pull(4), None, None, false)]);
        assert!(ask_deeper(&transport, &pages, &mut ahead, ends)
            .await
            .is_none());
    }

    #[tokio::test]
    async fn a_pulled_page_is_encoded_as_it_is_read_for_a_store_that_keeps_json() {
        use mesh_core::feedsync::{self, Stamp};
        use mesh_core::model::EntryDraft;
        use mesh_core::time::Timestamp;
        let when = Timestamp::from_unix(1_700_000_000).unwrap();
        let entry = |id: &str| {
            let draft = EntryDraft::new(id, serde_json::json!({ "n": 1 }));
            feedsync::create(
                id.parse().unwrap(),
                &Stamp::new("dev".parse().unwrap(), when),
                draft.into_new_data("ann".parse().unwrap(), when),
            )
        };
        let answer = Response::Changes {
            feed: "folder:f/notes".parse().unwrap(),
            entries: vec![entry("e1"), entry("e2")],
            next: Cursor(2),
            more: false,
        };
        let canned = answer.clone();
        let transport: Arc<dyn Transport> =
            Arc::new(Scripted(Box::new(move |_| Ok(canned.clone()))));
        for (encode, made) in [(true, 2), (false, 0)] {
            let Ok(got) = InFlight::send(&transport, pull(0), None, None, encode)
                .answer()
                .await
            else {
                panic!("no answer");
            };
            assert_eq!(got.response(), &answer);
            assert_eq!(got.made_ahead(), made, "encode: {encode}");
        }
        // Only a pull's answer: a push's carries no entries to store.
        let push = Request::Push {
            from: "me".parse().unwrap(),
            feed: "folder:f/notes".parse().unwrap(),
            entries: vec![entry("e3")],
        };
        let Ok(got) = InFlight::send(&transport, push, None, None, true)
            .answer()
            .await
        else {
            panic!("no answer");
        };
        assert_eq!(got.made_ahead(), 0);
    }

    #[test]
    fn pushes_travel_together_except_where_order_matters() {
        use mesh_core::feedsync::{self, Stamp};
        use mesh_core::model::{EntryDraft, MediaRef};
        use mesh_core::time::Timestamp;
        let entry = |media: Option<MediaRef>| {
            let mut draft = EntryDraft::new("t", serde_json::json!({}));
            draft.media = media;
            let when = Timestamp::from_unix(1_700_000_000).unwrap();
            feedsync::create(
                "e1".parse().unwrap(),
                &Stamp::new("dev".parse().unwrap(), when),
                draft.into_new_data("ann".parse().unwrap(), when),
            )
        };
        let push = |feed: &str, media: Option<MediaRef>| Request::Push {
            from: "me".parse().unwrap(),
            feed: feed.parse().unwrap(),
            entries: vec![entry(media)],
        };
        let blob = MediaRef {
            hash: "blake3:00".into(),
            content_type: "text/plain".into(),
            length: 1,
        };
        assert!(pipelines(&push("folder:f/notes", None)));
        assert!(pipelines(&push("mesh:ann/devices", None)));
        // Its task uploads the blobs first (see `InFlight::send`).
        assert!(pipelines(&push("folder:f/notes", Some(blob.clone()))));
        for (request, why) in [
            (push("folder:f/members", None), "members"),
            (push("folder:f/info", Some(blob)), "info"),
            (pull(0), "a pull"),
        ] {
            assert!(!pipelines(&request), "{why}");
        }
    }
}
