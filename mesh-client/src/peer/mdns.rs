//! Discovery on the local network by multicast DNS service discovery (mDNS/DNS-SD, RFC 6762
//! and 6763): a device announces where it listens for peers as an instance of the
//! [`SERVICE`] service, and browses for the instances of the others.
//!
//! **Only the interfaces the application names.** [`MdnsConfig::interfaces`] lists IPv4
//! addresses of local interfaces. The receiving socket joins the mDNS group on those alone,
//! and each sending socket is bound to one of them with it as its multicast interface, so no
//! packet leaves through an interface that was not named. The tests, examples and benchmarks
//! of this repository use [`MdnsConfig::loopback`] (127.0.0.1 only, multicast TTL 1, a port
//! of their own). The crate `mdns-sd` was not used: its daemon joins the group on every
//! interface as it starts, before an interface selection can apply.
//!
//! **What arrives is hostile.** Packets are read up to [`MAX_PACKET`] bytes and parsed by
//! `simple-dns`; anything malformed is dropped. An instance counts only with its PTR, SRV,
//! TXT (`v=1`, `user=`, `device=`, valid ids) and A records in one response, and only if the
//! announced address is the one the packet came from (an announcement cannot point this
//! device at a third host). At most [`MAX_DISCOVERED`] instances are remembered, at most
//! [`MAX_PER_HOST`] from one address, each for at
//! most [`MdnsConfig::record_ttl`] after it was last heard; a time to live of 0 (a goodbye)
//! forgets it. Queries are answered at most once per [`MIN_ANSWER_GAP`]: a query heard sooner
//! after the last answer is answered when the gap has passed (one answer for all the queries
//! heard meanwhile), never dropped. A discovered
//! address is only a hint: the peer handshake proves who answers.
//!
//! Not done: IPv6 (AAAA records and the ff02::fb group), known-answer suppression, and
//! answering from source port 5353 (replies come from an ephemeral port, which some strict
//! mDNS browsers ignore; mesh's own browser accepts them).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mesh_core::id::{DeviceId, UserId};
use simple_dns::rdata::{RData, A, PTR, SRV, TXT};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::peer::discovery::reachable;
use crate::peer::PeerError;

/// The DNS-SD service type mesh devices announce.
pub const SERVICE: &str = "_mesh._tcp.local";

/// The IPv4 mDNS group.
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// The most instances one browser remembers (more are ignored until some expire).
pub const MAX_DISCOVERED: usize = 64;

/// The most instances remembered from one sending address (one host cannot crowd out the
/// others).
pub const MAX_PER_HOST: usize = 4;

/// The most interfaces one discovery runs on.
pub const MAX_INTERFACES: usize = 16;

/// The largest packet read (the mDNS maximum, RFC 6762 section 17).
pub const MAX_PACKET: usize = 9000;

/// The shortest time between two answers to queries.
pub const MIN_ANSWER_GAP: Duration = Duration::from_millis(250);

/// The version this announcement format carries in its TXT record (`v=1`).
const FORMAT_VERSION: &str = "1";

/// Where and how discovery runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// IPv4 addresses of the local interfaces to announce and browse on (at least one, at
    /// most [`MAX_INTERFACES`]). Nothing is sent or joined on any other interface.
    pub interfaces: Vec<Ipv4Addr>,
    /// The UDP port: [`MDNS_PORT`] on a real network; tests use one of their own so that they
    /// neither meet each other nor the machine's own mDNS responder.
    pub port: u16,
    /// How often the browser asks again (and forgets what expired).
    pub query_interval: Duration,
    /// The time to live announced, and the longest an instance is remembered without being
    /// heard again (whatever time to live it announced).
    pub record_ttl: Duration,
    /// The multicast TTL (hop limit) of what is sent: 255 as RFC 6762 asks; 1 keeps packets
    /// on the link.
    pub multicast_ttl: u32,
}

impl MdnsConfig {
    /// Discovery on `interfaces` with the standard port, a query every 30 s, records that
    /// live 2 minutes, multicast TTL 255.
    pub fn new(interfaces: Vec<Ipv4Addr>) -> Self {
        MdnsConfig {
            interfaces,
            port: MDNS_PORT,
            query_interval: Duration::from_secs(30),
            record_ttl: Duration::from_secs(120),
            multicast_ttl: 255,
        }
    }

    /// Discovery on the loopback interface alone, on `port`, multicast TTL 1: devices of one
    /// machine find each other and nothing goes anywhere else.
    pub fn loopback(port: u16) -> Self {
        MdnsConfig {
            interfaces: vec![Ipv4Addr::LOCALHOST],
            port,
            multicast_ttl: 1,
            ..MdnsConfig::new(Vec::new())
        }
    }

    fn check(&self) -> Result<(), PeerError> {
        let bad = |m: String| Err(PeerError::Config(m));
        if self.interfaces.is_empty() {
            return bad("mDNS needs at least one interface address".into());
        }
        if self.interfaces.len() > MAX_INTERFACES {
            return bad(format!(
                "{} mDNS interfaces (at most {MAX_INTERFACES})",
                self.interfaces.len()
            ));
        }
        if let Some(i) = self
            .interfaces
            .iter()
            .find(|i| i.is_unspecified() || i.is_multicast() || i.is_broadcast())
        {
            return bad(format!("{i} is not the address of one interface"));
        }
        if self.port == 0 {
            return bad("the mDNS port must not be 0".into());
        }
        if !(1..=255).contains(&self.multicast_ttl) {
            return bad(format!("multicast TTL {} (1 to 255)", self.multicast_ttl));
        }
        if self.query_interval < Duration::from_secs(1) {
            return bad("the query interval must be at least 1 s".into());
        }
        if self.record_ttl < Duration::from_secs(1) || self.record_ttl > Duration::from_secs(4500) {
            return bad("the record TTL must be between 1 s and 75 min".into());
        }
        Ok(())
    }
}

/// What a device announces: who it is and where it listens for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsAnnouncement {
    /// The device's user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// Where it listens. An unspecified IP (`0.0.0.0:port`) announces, on each interface,
    /// that interface's own address with this port.
    pub addr: SocketAddr,
}

/// A device another device announced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveredPeer {
    /// Its user, as announced (the handshake checks it).
    pub user: UserId,
    /// Its device, as announced (the handshake checks it).
    pub device: DeviceId,
    /// Where it says it listens.
    pub addr: SocketAddr,
}

/// Announcing and browsing on the local network. Stops when dropped (without a goodbye) or
/// [closed](MdnsDiscovery::close) (with one).
#[derive(Debug)]
pub struct MdnsDiscovery {
    peers: watch::Receiver<Vec<DiscoveredPeer>>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl MdnsDiscovery {
    /// Starts browsing on `config`'s interfaces and, with `announce`, announcing this device.
    /// `Config` for a configuration or announcement that cannot be used, `Io` when a socket
    /// cannot be opened (an interface address that is not this machine's, say).
    pub async fn start(
        config: MdnsConfig,
        announce: Option<MdnsAnnouncement>,
    ) -> Result<MdnsDiscovery, PeerError> {
        config.check()?;
        let me = match announce {
            Some(a) => Some(Announcer::new(a)?),
            None => None,
        };
        let recv = UdpSocket::from_std(receiving_socket(&config)?.into())?;
        let mut senders = Vec::with_capacity(config.interfaces.len());
        for iface in &config.interfaces {
            let s = sending_socket(*iface, config.multicast_ttl)?;
            senders.push((*iface, UdpSocket::from_std(s.into())?));
        }
        let (tx, rx) = watch::channel(Vec::new());
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let run = Runner {
            config,
            recv,
            senders,
            me,
            found: Mutex::new(HashMap::new()),
            last_answer: Mutex::new(None),
            tx,
        };
        let task = tokio::spawn(run.run(wake.clone(), stop.clone()));
        Ok(MdnsDiscovery {
            peers: rx,
            wake,
            stop,
            task: Some(task),
        })
    }

    /// The devices heard and not expired, in order (one device may appear at several
    /// addresses).
    pub fn peers(&self) -> Vec<DiscoveredPeer> {
        self.peers.borrow().clone()
    }

    /// A receiver that sees every change of [`peers`](Self::peers).
    pub fn subscribe(&self) -> watch::Receiver<Vec<DiscoveredPeer>> {
        self.peers.clone()
    }

    /// Asks the network again now, without waiting for the query interval.
    pub fn query_now(&self) {
        self.wake.notify_one();
    }

    /// Says goodbye (the announcement with a time to live of 0, so browsers forget this
    /// device at once) and stops.
    pub async fn close(mut self) {
        self.stop.notify_one();
        if let Some(mut task) = self.task.take() {
            // The goodbye is one send per interface; a second is plenty.
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for MdnsDiscovery {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// This device's announcement, ready to be written.
struct Announcer {
    what: MdnsAnnouncement,
    /// The instance label (random per start, so a restarted device is a new instance).
    label: String,
}

impl Announcer {
    fn new(what: MdnsAnnouncement) -> Result<Announcer, PeerError> {
        let ip_ok = match what.addr.ip() {
            IpAddr::V4(ip) => ip.is_unspecified() || reachable(&what.addr),
            IpAddr::V6(_) => false,
        };
        if !ip_ok || what.addr.port() == 0 {
            return Err(PeerError::Config(format!(
                "{} cannot be announced (an IPv4 address a peer can connect to, or 0.0.0.0 \
                 with a port)",
                what.addr
            )));
        }
        // Each TXT string holds at most 255 bytes.
        for (key, value) in [
            ("user=", what.user.as_str()),
            ("device=", what.device.as_str()),
        ] {
            if key.len() + value.len() > 255 {
                return Err(PeerError::Config(format!(
                    "the id {value:?} is too long to announce ({} bytes with its key, at most 255)",
                    key.len() + value.len()
                )));
            }
        }
        Ok(Announcer {
            what,
            label: format!("mesh-{:016x}", fastrand::u64(..)),
        })
    }

    /// The announcement as sent on the interface `iface`, with time to live `ttl` seconds.
    fn packet(&self, iface: Ipv4Addr, ttl: u32) -> Option<Vec<u8>> {
        let ip = match self.what.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => iface,
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => return None,
        };
        let instance = format!("{}.{SERVICE}", self.label);
        let host = format!("{}.local", self.label);
        let user = format!("user={}", self.what.user);
        let device = format!("device={}", self.what.device);
        let version = format!("v={FORMAT_VERSION}");
        let txt = TXT::new()
            .with_string(&version)
            .and_then(|t| t.with_string(&user))
            .and_then(|t| t.with_string(&device))
            .ok()?;
        let mut p = Packet::new_reply(0);
        p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        p.answers.push(ResourceRecord::new(
            Name::new(SERVICE).ok()?,
            CLASS::IN,
            ttl,
            RData::PTR(PTR(Name::new(&instance).ok()?)),
        ));
        p.additional_records.push(ResourceRecord::new(
            Name::new(&instance).ok()?,
            CLASS::IN,
            ttl,
            RData::SRV(SRV {
                priority: 0,
                weight: 0,
                port: self.what.addr.port(),
                target: Name::new(&host).ok()?,
            }),
        ));
        p.additional_records.push(ResourceRecord::new(
            Name::new(&instance).ok()?,
            CLASS::IN,
            ttl,
            RData::TXT(txt),
        ));
        p.additional_records.push(ResourceRecord::new(
            Name::new(&host).ok()?,
            CLASS::IN,
            ttl,
            RData::A(A::from(ip)),
        ));
        p.build_bytes_vec_compressed().ok()
    }
}

/// A query for the service's instances.
fn query_packet() -> Option<Vec<u8>> {
    let mut p = Packet::new_query(0);
    p.questions.push(Question::new(
        Name::new(SERVICE).ok()?,
        QTYPE::TYPE(TYPE::PTR),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().ok()
}

/// A name as lower-case text without a trailing dot.
fn name_text(name: &Name<'_>) -> String {
    name.to_string().trim_end_matches('.').to_ascii_lowercase()
}

/// What one received packet says.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// A query that asks for the service's instances.
    Query,
    /// A response: each instance with the peer it describes (`None` when it is incomplete or
    /// invalid) and its time to live in seconds (0: a goodbye).
    Response(Vec<(String, Option<DiscoveredPeer>, u32)>),
    /// Anything else.
    Other,
}

/// Reads a packet that came from `from`; never fails (what cannot be read is `Other`).
fn hear(bytes: &[u8], from: IpAddr) -> Heard {
    let Ok(p) = Packet::parse(bytes) else {
        return Heard::Other;
    };
    let service = SERVICE.to_ascii_lowercase();
    if !p.has_flags(PacketFlag::RESPONSE) {
        let asks = p.questions.iter().any(|q| {
            name_text(&q.qname) == service && matches!(q.qtype, QTYPE::TYPE(TYPE::PTR) | QTYPE::ANY)
        });
        return if asks { Heard::Query } else { Heard::Other };
    }
    let records: Vec<&ResourceRecord<'_>> = p
        .answers
        .iter()
        .chain(p.additional_records.iter())
        .collect();
    let suffix = format!(".{service}");
    let mut out = Vec::new();
    for r in &records {
        if out.len() >= MAX_DISCOVERED {
            break;
        }
        let RData::PTR(PTR(target)) = &r.rdata else {
            continue;
        };
        if name_text(&r.name) != service {
            continue;
        }
        let instance = name_text(target);
        if !instance.ends_with(&suffix) || out.iter().any(|(i, _, _)| i == &instance) {
            continue;
        }
        let peer = describe(&records, &instance, from);
        out.push((instance, peer, r.ttl));
    }
    Heard::Response(out)
}

/// The peer the records say `instance` is, if they say it completely and validly.
fn describe(
    records: &[&ResourceRecord<'_>],
    instance: &str,
    from: IpAddr,
) -> Option<DiscoveredPeer> {
    let (port, host) = first(records, instance, |d| match d {
        RData::SRV(srv) => Some((srv.port, name_text(&srv.target))),
        _ => None,
    })?;
    let txt = first(records, instance, |d| match d {
        RData::TXT(t) => Some(t),
        _ => None,
    })?;
    let (mut version, mut user, mut device) = (None, None, None);
    for (key, value) in txt.iter_raw() {
        let slot = match key {
            b"v" => &mut version,
            b"user" => &mut user,
            b"device" => &mut device,
            _ => continue,
        };
        if slot.is_none() {
            *slot = value.and_then(|v| std::str::from_utf8(v).ok());
        }
    }
    if version != Some(FORMAT_VERSION) {
        return None;
    }
    let user: UserId = user?.parse().ok()?;
    let device: DeviceId = device?.parse().ok()?;
    let ip = first(records, &host, |d| match d {
        RData::A(a) => Some(Ipv4Addr::from(a.address)),
        _ => None,
    })?;
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    // Only the sender's own address: an announcement cannot send this device elsewhere.
    if IpAddr::V4(ip) != from || !reachable(&addr) {
        return None;
    }
    Some(DiscoveredPeer { user, device, addr })
}

/// What `pick` finds in the first record named `name` that it accepts.
fn first<'r, T>(
    records: &[&'r ResourceRecord<'r>],
    name: &str,
    pick: impl Fn(&'r RData<'r>) -> Option<T>,
) -> Option<T> {
    records
        .iter()
        .filter(|r| name_text(&r.name) == name)
        .find_map(|r| pick(&r.rdata))
}

/// The socket that receives the group's packets on the configured interfaces (bound to the
/// group address, so it sees nothing else).
fn receiving_socket(config: &MdnsConfig) -> Result<Socket, PeerError> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(MDNS_GROUP, config.port)).into())?;
    for iface in &config.interfaces {
        s.join_multicast_v4(&MDNS_GROUP, iface)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A socket that sends to the group through `iface` alone.
fn sending_socket(iface: Ipv4Addr, ttl: u32) -> Result<Socket, PeerError> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(iface, 0)).into())?;
    s.set_multicast_if_v4(&iface)?;
    s.set_multicast_ttl_v4(ttl)?;
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// An instance heard.
struct Found {
    peer: DiscoveredPeer,
    until: Instant,
}

struct Runner {
    config: MdnsConfig,
    recv: UdpSocket,
    senders: Vec<(Ipv4Addr, UdpSocket)>,
    me: Option<Announcer>,
    found: Mutex<HashMap<String, Found>>,
    last_answer: Mutex<Option<Instant>>,
    tx: watch::Sender<Vec<DiscoveredPeer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runner {
    async fn run(self, wake: Arc<Notify>, stop: Arc<Notify>) {
        let ttl = self.config.record_ttl.as_secs() as u32;
        let mut tick = tokio::time::interval(self.config.query_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; MAX_PACKET];
        // Receive errors in a row: a socket that keeps failing is given a pause, not a spin.
        let mut failures = 0u32;
        // When the answer to queries heard too soon after the last one is due.
        let mut deferred: Option<tokio::time::Instant> = None;
        self.announce(ttl).await;
        loop {
            let answer_later = async {
                match deferred {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.notified() => {
                    self.announce(0).await;
                    return;
                }
                _ = tick.tick() => {
                    self.expire();
                    self.query().await;
                }
                _ = wake.notified() => self.query().await,
                _ = answer_later => {
                    deferred = None;
                    if let Some(at) = self.answer(ttl).await {
                        deferred = Some(at);
                    }
                }
                got = self.recv.recv_from(&mut buf) => match got {
                    Ok((n, from)) => {
                        failures = 0;
                        if let Some(at) = self.heard(&buf[..n], from.ip(), ttl).await {
                            deferred.get_or_insert(at);
                        }
                    }
                    // A UDP receive error usually concerns one datagram; the next may be
                    // fine. Many in a row slow the loop down instead of spinning.
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        if failures >= 16 {
                            tracing::debug!(error = %e, "mDNS receive keeps failing");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
    }

    async fn send(&self, packet: impl Fn(Ipv4Addr) -> Option<Vec<u8>>) {
        let to = SocketAddr::V4(SocketAddrV4::new(MDNS_GROUP, self.config.port));
        for (iface, sock) in &self.senders {
            if let Some(bytes) = packet(*iface) {
                if let Err(e) = sock.send_to(&bytes, to).await {
                    tracing::debug!(%iface, error = %e, "mDNS send failed");
                }
            }
        }
    }

    async fn announce(&self, ttl: u32) {
        if let Some(me) = &self.me {
            self.send(|iface| me.packet(iface, ttl)).await;
        }
    }

    async fn query(&self) {
        self.send(|_| query_packet()).await;
    }

    /// Takes in a packet heard; for a query that may not be answered yet (too soon after the
    /// last answer), when it may.
    async fn heard(&self, bytes: &[u8], from: IpAddr, ttl: u32) -> Option<tokio::time::Instant> {
        match hear(bytes, from) {
            Heard::Query => self.answer(ttl).await,
            Heard::Response(instances) => {
                self.learn(instances);
                None
            }
            Heard::Other => None,
        }
    }

    /// Answers the queries heard, unless the last answer was less than [`MIN_ANSWER_GAP`]
    /// ago: then says when the answer may go.
    async fn answer(&self, ttl: u32) -> Option<tokio::time::Instant> {
        self.me.as_ref()?;
        let now = Instant::now();
        let wait = {
            let mut last = lock(&self.last_answer);
            match *last {
                Some(t) if now.duration_since(t) < MIN_ANSWER_GAP => {
                    Some(MIN_ANSWER_GAP - now.duration_since(t))
                }
                _ => {
                    *last = Some(now);
                    None
                }
            }
        };
        match wait {
            Some(wait) => Some(tokio::time::Instant::now() + wait),
            None => {
                self.announce(ttl).await;
                None
            }
        }
    }

    fn learn(&self, instances: Vec<(String, Option<DiscoveredPeer>, u32)>) {
        let now = Instant::now();
        let own = self.me.as_ref().map(|m| &m.what.device);
        let mut changed = false;
        {
            let mut found = lock(&self.found);
            for (instance, peer, ttl) in instances {
                if ttl == 0 {
                    changed |= found.remove(&instance).is_some();
                    continue;
                }
                let Some(peer) = peer else { continue };
                if Some(&peer.device) == own {
                    continue;
                }
                let life = Duration::from_secs(ttl.into()).min(self.config.record_ttl);
                let until = now + life;
                if let Some(f) = found.get_mut(&instance) {
                    changed |= f.peer != peer;
                    f.peer = peer;
                    f.until = until;
                } else if found.len() < MAX_DISCOVERED
                    && found
                        .values()
                        .filter(|f| f.peer.addr.ip() == peer.addr.ip())
                        .count()
                        < MAX_PER_HOST
                {
                    found.insert(instance, Found { peer, until });
                    changed = true;
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    fn expire(&self) {
        let now = Instant::now();
        let expired = {
            let mut found = lock(&self.found);
            let before = found.len();
            found.retain(|_, f| f.until > now);
            found.len() != before
        };
        if expired {
            self.publish();
        }
    }

    fn publish(&self) {
        let mut peers: Vec<DiscoveredPeer> =
            lock(&self.found).values().map(|f| f.peer.clone()).collect();
        peers.sort();
        peers.dedup();
        self.tx.send_replace(peers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcer(addr: &str) -> Announcer {
        Announcer::new(MdnsAnnouncement {
            user: "ann".parse().unwrap(),
            device: "ann-laptop".parse().unwrap(),
            addr: addr.parse().unwrap(),
        })
        .unwrap()
    }

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn laptop() -> MdnsAnnouncement {
        MdnsAnnouncement {
            user: "ann".parse().unwrap(),
            device: "ann-laptop".parse().unwrap(),
            addr: "127.0.0.1:4100".parse().unwrap(),
        }
    }

    /// A device that browses just after another started announcing (which answered its own
    /// first query a moment before) hears an answer to its query: the answer waits out the
    /// gap instead of being dropped. Each round uses a group port of its own; no round may
    /// wait for the 30 s query interval.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_heard_just_after_an_answer_is_answered_once_the_gap_has_passed() {
        for _ in 0..4 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = MdnsConfig::loopback(port);
            // Someone already listening sees the laptop's first announcement; the laptop
            // answers its own first query right after it.
            let observer = MdnsDiscovery::start(config.clone(), None).await.unwrap();
            let laptop = MdnsDiscovery::start(config.clone(), Some(laptop()))
                .await
                .unwrap();
            let mut seen = observer.subscribe();
            tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|p| !p.is_empty()))
                .await
                .expect("the laptop's announcement was not heard")
                .unwrap();
            // Then another device asks, and a tablet starts browsing (and asks at once).
            let asker = UdpSocket::from_std(sending_socket(Ipv4Addr::LOCALHOST, 1).unwrap().into())
                .unwrap();
            asker
                .send_to(
                    &query_packet().unwrap(),
                    SocketAddrV4::new(MDNS_GROUP, port),
                )
                .await
                .unwrap();
            let tablet = MdnsDiscovery::start(config, None).await.unwrap();
            let mut peers = tablet.subscribe();
            tokio::time::timeout(
                Duration::from_secs(5),
                peers.wait_for(|p| p.iter().any(|d| d.device.as_str() == "ann-laptop")),
            )
            .await
            .expect("the tablet's query went unanswered")
            .unwrap();
            tablet.close().await;
            laptop.close().await;
            observer.close().await;
        }
    }

    #[tokio::test]
    async fn answers_keep_their_gap_and_say_when_the_next_may_go() {
        let config = MdnsConfig::loopback(
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        );
        let (tx, _rx) = watch::channel(Vec::new());
        let runner = Runner {
            recv: UdpSocket::from_std(receiving_socket(&config).unwrap().into()).unwrap(),
            senders: vec![(
                Ipv4Addr::LOCALHOST,
                UdpSocket::from_std(sending_socket(Ipv4Addr::LOCALHOST, 1).unwrap().into())
                    .unwrap(),
            )],
            config,
            me: Some(Announcer::new(laptop()).unwrap()),
            found: Mutex::new(HashMap::new()),
            last_answer: Mutex::new(None),
            tx,
        };
        let before = tokio::time::Instant::now();
        assert_eq!(
            runner.answer(120).await,
            None,
            "the first query is answered at once"
        );
        let later = runner
            .answer(120)
            .await
            .expect("a query right after an answer is answered later, not dropped");
        assert!(later > before && later <= tokio::time::Instant::now() + MIN_ANSWER_GAP);
    }

    #[test]
    fn an_announcement_reads_back_as_the_peer_it_describes() {
        let a = announcer("127.0.0.1:4100");
        let bytes = a.packet(Ipv4Addr::LOCALHOST, 120).unwrap();
        let Heard::Response(got) = hear(&bytes, LO) else {
            panic!("not a response")
        };
        assert_eq!(got.len(), 1);
        let (instance, peer, ttl) = &got[0];
        assert_eq!(
            instance,
            &format!("{}.{}", a.label, SERVICE.to_ascii_lowercase())
        );
        assert_eq!(*ttl, 120);
        let peer = peer.as_ref().expect("a complete announcement");
        assert_eq!(peer.user.as_str(), "ann");
        assert_eq!(peer.device.as_str(), "ann-laptop");
        assert_eq!(peer.addr, "127.0.0.1:4100".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn an_unspecified_listener_announces_each_interfaces_address() {
        let a = announcer("0.0.0.0:4100");
        let bytes = a.packet(Ipv4Addr::new(127, 0, 0, 1), 120).unwrap();
        let Heard::Response(got) = hear(&bytes, LO) else {
            panic!("not a response")
        };
        assert_eq!(
            got[0].1.as_ref().unwrap().addr.to_string(),
            "127.0.0.1:4100"
        );
    }

    #[test]
    fn an_announcement_of_another_host_than_its_sender_is_not_a_peer() {
        // Sent from 127.0.0.2, it names 127.0.0.1: it cannot point this device elsewhere.
        let bytes = announcer("127.0.0.1:4100")
            .packet(Ipv4Addr::LOCALHOST, 120)
            .unwrap();
        let Heard::Response(got) = hear(&bytes, "127.0.0.2".parse().unwrap()) else {
            panic!("not a response")
        };
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, None);
    }

    #[test]
    fn a_goodbye_has_a_ttl_of_zero_and_a_query_is_a_query() {
        let bytes = announcer("127.0.0.1:4100")
            .packet(Ipv4Addr::LOCALHOST, 0)
            .unwrap();
        let Heard::Response(got) = hear(&bytes, LO) else {
            panic!("not a response")
        };
        assert_eq!(got[0].2, 0);
        assert_eq!(hear(&query_packet().unwrap(), LO), Heard::Query);
    }

    #[test]
    fn bad_configurations_and_announcements_are_refused() {
        let mut c = MdnsConfig::loopback(45353);
        assert!(c.check().is_ok());
        c.interfaces = vec![Ipv4Addr::UNSPECIFIED];
        assert!(matches!(c.check(), Err(PeerError::Config(_))));
        c.interfaces = vec![MDNS_GROUP];
        assert!(matches!(c.check(), Err(PeerError::Config(_))));
        c.interfaces = vec![Ipv4Addr::LOCALHOST; MAX_INTERFACES + 1];
        assert!(matches!(c.check(), Err(PeerError::Config(_))));
        let mut c = MdnsConfig::loopback(0);
        assert!(matches!(c.check(), Err(PeerError::Config(_))));
        c.port = 45353;
        c.query_interval = Duration::from_millis(10);
        assert!(matches!(c.check(), Err(PeerError::Config(_))));
        let refused = |addr: &str, device: &str| {
            Announcer::new(MdnsAnnouncement {
                user: "ann".parse().unwrap(),
                device: device.parse().unwrap(),
                addr: addr.parse().unwrap(),
            })
            .is_err()
        };
        assert!(refused("127.0.0.1:0", "d"));
        assert!(refused("[::1]:4100", "d"));
        assert!(refused("224.0.0.251:4100", "d"));
        assert!(refused("127.0.0.1:4100", &"d".repeat(250)));
        assert!(!refused("127.0.0.1:4100", &"d".repeat(248)));
    }

    #[tokio::test]
    async fn one_host_cannot_fill_the_list() {
        let config = MdnsConfig::loopback({
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        });
        let recv = UdpSocket::from_std(receiving_socket(&config).unwrap().into()).unwrap();
        let (tx, rx) = watch::channel(Vec::new());
        let run = Runner {
            config,
            recv,
            senders: Vec::new(),
            me: None,
            found: Mutex::new(HashMap::new()),
            last_answer: Mutex::new(None),
            tx,
        };
        let from = |ip: &str, n: usize| {
            let peer = DiscoveredPeer {
                user: "eve".parse().unwrap(),
                device: format!("fake-{n}").parse().unwrap(),
                addr: format!("{ip}:{}", 4000 + n).parse().unwrap(),
            };
            (format!("i{ip}-{n}"), Some(peer), 120)
        };
        run.learn((0..10).map(|n| from("127.0.0.2", n)).collect());
        assert_eq!(rx.borrow().len(), MAX_PER_HOST);
        // Another host still gets in; a goodbye frees a slot.
        run.learn(vec![from("127.0.0.3", 0)]);
        assert_eq!(rx.borrow().len(), MAX_PER_HOST + 1);
        run.learn(vec![("i127.0.0.2-0".into(), None, 0)]);
        assert_eq!(rx.borrow().len(), MAX_PER_HOST);
    }

    proptest::proptest! {
        /// Whatever arrives, reading it ends without a panic and never yields a peer at
        /// another address than the sender's.
        #[test]
        fn hostile_packets_never_panic_nor_point_elsewhere(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cut in 0usize..400,
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let _ = hear(&bytes, LO);
            // Mutations of a real announcement.
            let mut real = announcer("127.0.0.1:4100").packet(Ipv4Addr::LOCALHOST, 120).unwrap();
            let i = flip.0 % real.len();
            real[i] ^= flip.1;
            real.truncate(real.len().saturating_sub(cut));
            if let Heard::Response(got) = hear(&real, LO) {
                for (_, peer, _) in got {
                    if let Some(p) = peer {
                        proptest::prop_assert_eq!(p.addr.ip(), LO);
                    }
                }
            }
        }
    }
}
