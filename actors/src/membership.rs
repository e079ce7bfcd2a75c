//! Gossip membership: which nodes belong to the cluster, where to reach them,
//! what state they are in and whether they are up.
//!
//! Built on chitchat (scuttlebutt gossip over UDP, phi-accrual failure
//! detection). chitchat only compares the cluster name, so every datagram goes
//! through [`HmacTransport`], which tags it with HMAC-SHA256 keyed by the
//! cluster secret and drops whatever arrives without a valid tag.
//!
//! Where things run: chitchat's gossip loop and its sockets live on a dedicated
//! [`Arbiter`] (a thread with its own runtime), so a handler that blocks the
//! caller's arbiter cannot delay heartbeats. The [`Membership`] actor runs on
//! the arbiter that called [`start`]; it reads chitchat's state and publishes
//! [`MembershipSnapshot`]s on a `watch` channel.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{bail, Context as _};
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId,
    FailureDetectorConfig, ProtocolVersion,
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, error, warn};

type HmacSha256 = Hmac<Sha256>;

/// Length of the HMAC-SHA256 tag appended to every gossip datagram.
pub const TAG_LEN: usize = 32;
/// Gossip key holding a node's internode RPC address.
pub const KEY_RPC_ADDR: &str = "rpc_addr";
/// Gossip key holding a node's HTTP address.
pub const KEY_HTTP_ADDR: &str = "http_addr";
/// Gossip key holding a node's [`NodeState`].
pub const KEY_STATE: &str = "state";

/// Largest UDP datagram, plus room for the tag.
const BUF_LEN: usize = 65_536;
/// How long the loopback codec may take to encode or decode one datagram.
const CODEC_TIMEOUT: Duration = Duration::from_millis(500);

/// A chitchat [`Transport`] that authenticates every datagram with an
/// HMAC-SHA256 tag (appended, [`TAG_LEN`] bytes) keyed by the cluster secret.
///
/// chitchat's wire encoding is private to it and its `Transport` trait moves
/// decoded envelopes, so a wrapper cannot see the bytes directly. Each socket
/// therefore opens `inner` on a loopback port and uses it as the codec: an
/// outgoing envelope is encoded by `inner` into a private relay socket, tagged
/// and sent from the real socket; an incoming datagram is verified in constant
/// time, and only a valid one is stripped of its tag and relayed to `inner` to
/// be decoded. `inner` must hence put chitchat's bytes into real UDP datagrams:
/// [`UdpTransport`], possibly wrapped by chitchat's `TransportExt` (an
/// in-memory `ChannelTransport` produces no bytes; `open` fails on it).
///
/// Not covered: replay of a captured datagram (harmless to chitchat, whose
/// state only moves forward by version) and datagrams whose payload plus tag
/// exceeds the UDP limit (states near 64 KiB; sending such a one fails).
pub struct HmacTransport<T = UdpTransport> {
    inner: T,
    mac: HmacSha256,
    rejected: Arc<AtomicU64>,
}

impl<T: Transport> HmacTransport<T> {
    /// Wraps `inner`, keyed by `secret`.
    pub fn new(inner: T, secret: &[u8]) -> anyhow::Result<Self> {
        let mac = HmacSha256::new_from_slice(secret).context("invalid HMAC key")?;
        Ok(Self {
            inner,
            mac,
            rejected: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The number of datagrams dropped for a missing or invalid tag, over every
    /// socket this transport opened.
    pub fn rejected(&self) -> Arc<AtomicU64> {
        self.rejected.clone()
    }
}

#[async_trait]
impl<T: Transport> Transport for HmacTransport<T> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let net = UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind {listen_addr}/udp for gossip"))?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let relay = UdpSocket::bind(loopback)
            .await
            .context("gossip relay socket")?;
        let codec = self
            .inner
            .open(loopback)
            .await
            .context("gossip codec socket")?;
        let mut socket = HmacSocket {
            relay_addr: relay.local_addr()?,
            codec_addr: codec.local_addr()?,
            net,
            relay,
            codec,
            mac: self.mac.clone(),
            rejected: self.rejected.clone(),
            buf: vec![0; BUF_LEN].into_boxed_slice(),
            awaiting: None,
        };
        // Fail now, not at the first gossip round, if `inner` emits no bytes.
        let probe = ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: chitchat::ChitchatMessage::BadCluster,
        };
        socket.encode(probe).await?;
        Ok(Box::new(socket))
    }
}

struct HmacSocket {
    net: UdpSocket,
    relay: UdpSocket,
    relay_addr: SocketAddr,
    codec: Box<dyn Socket>,
    codec_addr: SocketAddr,
    mac: HmacSha256,
    rejected: Arc<AtomicU64>,
    buf: Box<[u8]>,
    /// A verified datagram handed to the codec: its sender and a deadline for
    /// the codec to decode it. Kept here because chitchat cancels `recv`.
    awaiting: Option<(SocketAddr, Instant)>,
}

fn tag(mac: &HmacSha256, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = mac.clone();
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// The payload length of `datagram` if its trailing tag is valid.
fn verify(mac: &HmacSha256, datagram: &[u8]) -> Option<usize> {
    let len = datagram.len().checked_sub(TAG_LEN)?;
    let (payload, tag) = datagram.split_at(len);
    let mut mac = mac.clone();
    mac.update(payload);
    mac.verify_slice(tag).ok().map(|()| len)
}

impl HmacSocket {
    /// Has the codec encode `envelope` into the start of `buf`; returns its length.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<usize> {
        // Anything already queued is a late leftover of a timed-out round.
        while self.relay.try_recv_from(&mut self.buf).is_ok() {}
        self.codec.send(self.relay_addr, envelope).await?;
        let deadline = Instant::now() + CODEC_TIMEOUT;
        loop {
            let (len, from) = timeout_at(deadline, self.relay.recv_from(&mut self.buf))
                .await
                .context("gossip codec emitted no datagram: the inner transport must use UDP")??;
            if from == self.codec_addr {
                return Ok(len);
            }
        }
    }

    fn reject(&self, from: SocketAddr, len: usize, why: &str) {
        let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        // Loud at first, then only at powers of two, so a flood cannot flood the log.
        if n.is_power_of_two() {
            warn!(%from, len, rejected_total = n, "gossip datagram dropped: {why}");
        } else {
            debug!(%from, len, rejected_total = n, "gossip datagram dropped: {why}");
        }
    }
}

#[async_trait]
impl Socket for HmacSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.net.local_addr().context("gossip socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let len = self.encode(envelope).await?;
        let end = len + TAG_LEN;
        if end > self.buf.len() {
            bail!("gossip datagram of {len} bytes leaves no room for its tag");
        }
        let tag = tag(&self.mac, &self.buf[..len]);
        self.buf[len..end].copy_from_slice(&tag);
        let num_bytes_sent = self
            .net
            .send_to(&self.buf[..end], to)
            .await
            .with_context(|| format!("failed to send gossip to {to}"))?;
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe: a datagram being decoded is remembered in `awaiting`.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some((peer, deadline)) = self.awaiting {
                match timeout_at(deadline, self.codec.recv()).await {
                    Err(_) => {
                        self.awaiting = None;
                        debug!(from = %peer, "authenticated gossip datagram did not decode");
                    }
                    Ok(outcome) => {
                        let mut outcome = outcome?;
                        if outcome.from_addr != self.relay_addr {
                            // Sent straight to the codec's port, around the check.
                            self.reject(outcome.from_addr, outcome.num_bytes_received, "bypass");
                            continue;
                        }
                        self.awaiting = None;
                        outcome.from_addr = peer;
                        outcome.num_bytes_received += TAG_LEN;
                        return Ok(outcome);
                    }
                }
            }
            let (len, from) = match self.net.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    debug!(error = %err, "transient gossip recv error");
                    continue;
                }
                Err(err) => return Err(err).context("fatal gossip recv error"),
            };
            let Some(payload_len) = verify(&self.mac, &self.buf[..len]) else {
                self.reject(from, len, "missing or invalid HMAC tag");
                continue;
            };
            self.relay
                .send_to(&self.buf[..payload_len], self.codec_addr)
                .await
                .context("gossip relay send")?;
            self.awaiting = Some((from, Instant::now() + CODEC_TIMEOUT));
        }
    }
}

/// A node's part in the cluster, gossiped under [`KEY_STATE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Receiving its ranges; not serving reads for them yet.
    Joining,
    /// A full member.
    Normal,
    /// Handing its ranges off before it leaves.
    Leaving,
    /// Gone from the ring: its ranges have been handed off.
    Left,
}

impl NodeState {
    /// The lowercase name, as gossiped.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Normal => "normal",
            NodeState::Leaving => "leaving",
            NodeState::Left => "left",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "joining" => Ok(NodeState::Joining),
            "normal" => Ok(NodeState::Normal),
            "leaving" => Ok(NodeState::Leaving),
            "left" => Ok(NodeState::Left),
            other => bail!("unknown node state {other:?}"),
        }
    }
}

/// How to join the gossip.
#[derive(Clone)]
pub struct MembershipConfig {
    /// Unique, stable name of this node.
    pub node_id: String,
    /// Must grow on every restart (start time works): how peers tell a
    /// restarted node from its previous run.
    pub generation: u64,
    /// UDP address to bind for gossip.
    pub gossip_bind: SocketAddr,
    /// UDP address peers gossip to.
    pub gossip_advertise: SocketAddr,
    /// Gossip addresses (`ip:port` or `host:port`) of nodes to contact first.
    pub seeds: Vec<String>,
    /// Name of the cluster; chitchat refuses peers with another.
    pub cluster_name: String,
    /// Shared secret keying the gossip HMAC. Must not be empty.
    pub secret: String,
    /// Time between gossip rounds (also the liveness polling period).
    pub gossip_interval: Duration,
    /// Internode RPC address advertised to peers.
    pub rpc_addr: SocketAddr,
    /// HTTP address advertised to peers.
    pub http_addr: SocketAddr,
    /// State announced at start.
    pub state: NodeState,
    /// Other keys announced at start (and kept by [`SetKeys`]).
    pub keys: BTreeMap<String, String>,
}

impl fmt::Debug for MembershipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipConfig")
            .field("node_id", &self.node_id)
            .field("generation", &self.generation)
            .field("gossip_bind", &self.gossip_bind)
            .field("gossip_advertise", &self.gossip_advertise)
            .field("seeds", &self.seeds)
            .field("cluster_name", &self.cluster_name)
            .field("secret", &"<redacted>")
            .field("gossip_interval", &self.gossip_interval)
            .field("rpc_addr", &self.rpc_addr)
            .field("http_addr", &self.http_addr)
            .field("state", &self.state)
            .field("keys", &self.keys)
            .finish()
    }
}

/// One node as last gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Generation of the incarnation described.
    pub generation: u64,
    /// Internode RPC address.
    pub rpc_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// Announced state.
    pub state: NodeState,
    /// Whether the failure detector deems it up (always true for self).
    pub live: bool,
    /// Its other gossiped keys (ring digests, removals it announced...).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// Keys of a node's gossip that are its identity, not [`Member::keys`].
const BASE_KEYS: [&str; 3] = [KEY_RPC_ADDR, KEY_HTTP_ADDR, KEY_STATE];

/// Every node seen since start, self included, sorted by id. A node that went
/// down stays listed with `live == false` and its last-known keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipSnapshot {
    /// The members, sorted by id.
    pub members: Vec<Member>,
}

impl MembershipSnapshot {
    /// Ids of the live members, in order.
    pub fn live_ids(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| m.live)
            .map(|m| m.id.as_str())
            .collect()
    }

    /// The member called `id`.
    pub fn get(&self, id: &str) -> Option<&Member> {
        let i = self
            .members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()?;
        self.members.get(i)
    }
}

/// Sets this node's gossiped [`NodeState`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetState(pub NodeState);

/// Sets (or, with `None`, deletes) other keys of this node's gossip.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetKeys(pub Vec<(String, Option<String>)>);

/// Stops gossiping and the actor; peers soon see this node as not live.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Stop;

/// What [`start`] returns.
pub struct MembershipHandle {
    /// The actor.
    pub addr: Addr<Membership>,
    /// The latest snapshot; changes whenever membership does.
    pub snapshots: watch::Receiver<Arc<MembershipSnapshot>>,
    /// Count of gossip datagrams dropped for a missing or invalid tag.
    pub rejected: Arc<AtomicU64>,
}

/// The membership actor: owns the chitchat handle and publishes snapshots.
pub struct Membership {
    config: MembershipConfig,
    handle: Option<ChitchatHandle>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    gossip_arbiter: Arbiter,
    peers: BTreeMap<String, Member>,
    polling: bool,
    tx: watch::Sender<Arc<MembershipSnapshot>>,
}

/// Reads `id`'s keys; `None` while they are missing (not gossiped yet) or invalid.
fn member_of(id: &ChitchatId, state: &chitchat::NodeState, live: bool) -> Option<Member> {
    let parsed = (|| -> anyhow::Result<Member> {
        let key = |k: &str| state.get(k).with_context(|| format!("no key {k}"));
        Ok(Member {
            id: id.node_id.to_string(),
            generation: id.generation_id,
            rpc_addr: key(KEY_RPC_ADDR)?.parse()?,
            http_addr: key(KEY_HTTP_ADDR)?.parse()?,
            gossip_addr: id.gossip_advertise_addr,
            state: key(KEY_STATE)?.parse()?,
            live,
            keys: state
                .key_values()
                .filter(|(k, _)| !BASE_KEYS.contains(k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    })();
    parsed
        .map_err(|err| debug!(node = ?id, error = %err, "member skipped"))
        .ok()
}

fn observe_all(chitchat: &Chitchat) -> Vec<Member> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let states = chitchat.node_states().iter();
    states
        .filter_map(|(id, st)| member_of(id, st, live.contains(id)))
        .collect()
}

fn self_member(c: &MembershipConfig) -> Member {
    Member {
        id: c.node_id.clone(),
        generation: c.generation,
        rpc_addr: c.rpc_addr,
        http_addr: c.http_addr,
        gossip_addr: c.gossip_advertise,
        state: c.state,
        live: true,
        keys: c.keys.clone(),
    }
}

impl Membership {
    /// Takes what chitchat reports: `observed` lists the nodes it knows, each
    /// with its liveness; a peer left out is no longer live.
    fn apply(&mut self, observed: Vec<Member>) {
        let mut best: BTreeMap<String, Member> = BTreeMap::new();
        for m in observed.into_iter().filter(|m| m.id != self.config.node_id) {
            // Several incarnations of one node: the live one, else the newest.
            match best.get(&m.id) {
                Some(b) if (b.live, b.generation) >= (m.live, m.generation) => {}
                _ => {
                    best.insert(m.id.clone(), m);
                }
            }
        }
        self.peers.values_mut().for_each(|m| m.live = false);
        for (id, m) in best {
            match self.peers.get(&id) {
                Some(old) if old.generation > m.generation && !m.live => {}
                _ => {
                    self.peers.insert(id, m);
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let mut members: Vec<Member> = self.peers.values().cloned().collect();
        members.push(self_member(&self.config));
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let snapshot = MembershipSnapshot { members };
        self.tx.send_if_modified(|current| {
            let changed = **current != snapshot;
            if changed {
                *current = Arc::new(snapshot);
            }
            changed
        });
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let chitchat = self.chitchat.clone();
        async move { observe_all(&*chitchat.lock().await) }
            .into_actor(self)
            .map(|observed, act, _| {
                act.polling = false;
                act.apply(observed);
            })
            .spawn(ctx);
    }
}

impl Actor for Membership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.publish();
        ctx.run_interval(self.config.gossip_interval, Self::poll);
        if let Some(handle) = &self.handle {
            handle
                .termination_watcher()
                .into_actor(self)
                .map(|result, act, ctx| {
                    error!(node = %act.config.node_id, ?result, "gossip loop ended");
                    ctx.stop();
                })
                .spawn(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.initiate_shutdown();
        }
        self.gossip_arbiter.stop();
    }
}

impl StreamHandler<BTreeMap<ChitchatId, chitchat::NodeState>> for Membership {
    fn handle(&mut self, live: BTreeMap<ChitchatId, chitchat::NodeState>, _: &mut Context<Self>) {
        self.apply(
            live.iter()
                .filter_map(|(id, st)| member_of(id, st, true))
                .collect(),
        );
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<SetState> for Membership {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, SetState(state): SetState, _: &mut Context<Self>) -> Self::Result {
        self.config.state = state;
        self.publish();
        let chitchat = self.chitchat.clone();
        Box::pin(async move {
            chitchat
                .lock()
                .await
                .self_node_state()
                .set(KEY_STATE, state)
        })
    }
}

impl Handler<SetKeys> for Membership {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, SetKeys(keys): SetKeys, _: &mut Context<Self>) -> Self::Result {
        for (key, value) in &keys {
            match value {
                Some(value) => self.config.keys.insert(key.clone(), value.clone()),
                None => self.config.keys.remove(key),
            };
        }
        self.publish();
        let chitchat = self.chitchat.clone();
        Box::pin(async move {
            let mut chitchat = chitchat.lock().await;
            let state = chitchat.self_node_state();
            for (key, value) in keys {
                match value {
                    Some(value) => state.set(key, value),
                    None => state.delete(&key),
                }
            }
        })
    }
}

impl Handler<Stop> for Membership {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Joins the gossip over UDP. Must run inside an actix `System`.
pub async fn start(config: MembershipConfig) -> anyhow::Result<MembershipHandle> {
    start_with_transport(config, UdpTransport).await
}

/// Joins the gossip with `transport` as the codec of [`HmacTransport`] (see
/// there: it must be UDP-based). Must run inside an actix `System`.
pub async fn start_with_transport<T: Transport>(
    config: MembershipConfig,
    transport: T,
) -> anyhow::Result<MembershipHandle> {
    if config.secret.is_empty() {
        bail!("membership: the cluster secret must not be empty");
    }
    if config.gossip_interval.is_zero() {
        bail!("membership: the gossip interval must not be zero");
    }
    let hmac = HmacTransport::new(transport, config.secret.as_bytes())?;
    let rejected = hmac.rejected();
    let chitchat_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(
            config.node_id.as_str(),
            config.generation,
            config.gossip_advertise,
        ),
        cluster_id: config.cluster_name.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr: config.gossip_bind,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: 8.0,
            initial_interval: config.gossip_interval,
            dead_node_grace_period: Duration::from_secs(24 * 3600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(24 * 3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        // Every Dynaflux node runs a chitchat that decodes V1 (compressed digests).
        protocol_version: ProtocolVersion::V1,
    };
    let mut key_values = vec![
        (KEY_RPC_ADDR.to_string(), config.rpc_addr.to_string()),
        (KEY_HTTP_ADDR.to_string(), config.http_addr.to_string()),
        (KEY_STATE.to_string(), config.state.to_string()),
    ];
    key_values.extend(config.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
    let gossip_arbiter = Arbiter::new();
    let (tx, rx) = oneshot::channel();
    gossip_arbiter.spawn(async move {
        let _ = tx.send(spawn_chitchat(chitchat_config, key_values, &hmac).await);
    });
    let started = rx
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("gossip arbiter died")));
    let handle = match started {
        Ok(handle) => handle,
        Err(err) => {
            gossip_arbiter.stop();
            return Err(err.context("membership: starting chitchat"));
        }
    };
    let chitchat = handle.chitchat();
    let live_events = chitchat.lock().await.live_nodes_watch_stream();
    let members = vec![self_member(&config)];
    let (tx, snapshots) = watch::channel(Arc::new(MembershipSnapshot { members }));
    let addr = Membership::create(move |ctx| {
        ctx.add_stream(live_events);
        Membership {
            config,
            handle: Some(handle),
            chitchat,
            gossip_arbiter,
            peers: BTreeMap::new(),
            polling: false,
            tx,
        }
    });
    Ok(MembershipHandle {
        addr,
        snapshots,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn free_addr() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("local addr")
    }

    fn config(
        id: &str,
        i: u16,
        gossip: SocketAddr,
        seeds: &[SocketAddr],
        secret: &str,
    ) -> MembershipConfig {
        MembershipConfig {
            node_id: id.to_string(),
            generation: 1,
            gossip_bind: gossip,
            gossip_advertise: gossip,
            seeds: seeds.iter().map(|s| s.to_string()).collect(),
            cluster_name: "test".to_string(),
            secret: secret.to_string(),
            gossip_interval: Duration::from_millis(100),
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], 18_000 + i)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 19_000 + i)),
            state: NodeState::Normal,
            keys: BTreeMap::new(),
        }
    }

    /// Starts `n` nodes `n0..`, all seeded with the first.
    async fn cluster(n: u16) -> Vec<MembershipHandle> {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let c = config(
                &format!("n{i}"),
                i,
                addrs[usize::from(i)],
                &addrs[..1],
                "s3cret",
            );
            nodes.push(start(c).await.expect("start"));
        }
        nodes
    }

    async fn wait_for(
        node: &MembershipHandle,
        what: impl Fn(&MembershipSnapshot) -> bool,
    ) -> Arc<MembershipSnapshot> {
        let mut rx = node.snapshots.clone();
        let found = tokio::time::timeout(WAIT, rx.wait_for(|s| what(s))).await;
        let snapshot = found.expect("deadline passed").expect("actor gone");
        Arc::clone(&snapshot)
    }

    fn all_live(s: &MembershipSnapshot, n: usize) -> bool {
        s.members.len() == n && s.members.iter().all(|m| m.live)
    }

    #[actix::test]
    async fn three_nodes_discover_each_other() {
        let nodes = cluster(3).await;
        for node in &nodes {
            let snapshot = wait_for(node, |s| all_live(s, 3)).await;
            assert_eq!(snapshot.live_ids(), ["n0", "n1", "n2"]);
            for (i, m) in snapshot.members.iter().enumerate() {
                let expected = config(&m.id, i as u16, m.gossip_addr, &[], "");
                assert_eq!(
                    (m.rpc_addr, m.http_addr),
                    (expected.rpc_addr, expected.http_addr)
                );
                assert_eq!(m.state, NodeState::Normal);
            }
        }
        nodes[2]
            .addr
            .send(SetState(NodeState::Leaving))
            .await
            .expect("send");
        let leaving =
            |s: &MembershipSnapshot| s.get("n2").is_some_and(|m| m.state == NodeState::Leaving);
        for node in &nodes {
            wait_for(node, leaving).await;
        }
        assert_eq!(nodes[0].rejected.load(Ordering::Relaxed), 0);
    }

    #[actix::test]
    async fn stopped_node_stays_listed_as_not_live() {
        let nodes = cluster(3).await;
        for node in &nodes {
            wait_for(node, |s| all_live(s, 3)).await;
        }
        nodes[2].addr.send(Stop).await.expect("send");
        for node in &nodes[..2] {
            let snapshot = wait_for(node, |s| s.get("n2").is_some_and(|m| !m.live)).await;
            assert_eq!(snapshot.members.len(), 3);
            assert_eq!(snapshot.live_ids(), ["n0", "n1"]);
            let n2 = snapshot.get("n2").expect("n2 listed");
            assert_eq!(n2.rpc_addr, SocketAddr::from(([127, 0, 0, 1], 18_002)));
        }
    }

    #[actix::test]
    async fn node_with_wrong_secret_never_joins() {
        let nodes = cluster(2).await;
        for node in &nodes {
            wait_for(node, |s| all_live(s, 2)).await;
        }
        let seed = nodes[0].snapshots.borrow().members[0].gossip_addr;
        let intruder = start(config("intruder", 9, free_addr(), &[seed], "wrong"))
            .await
            .expect("start");
        // Watched for 3 s on both members at once; any snapshot listing it fails.
        let (mut rx0, mut rx1) = (nodes[0].snapshots.clone(), nodes[1].snapshots.clone());
        let listed = |s: &Arc<MembershipSnapshot>| s.get("intruder").is_some();
        tokio::select! {
            _ = rx0.wait_for(listed) => panic!("n0 lists the intruder (or stopped)"),
            _ = rx1.wait_for(listed) => panic!("n1 lists the intruder (or stopped)"),
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
        assert!(nodes[0].rejected.load(Ordering::Relaxed) > 0);
        assert_eq!(intruder.snapshots.borrow().members.len(), 1);
    }

    #[tokio::test]
    async fn tags_are_checked() {
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let sender = HmacTransport::new(UdpTransport, b"key").expect("transport");
        let receiver = HmacTransport::new(UdpTransport, b"key").expect("transport");
        let rejected = receiver.rejected();
        let mut tx = sender.open(local).await.expect("open");
        let mut rx = receiver.open(local).await.expect("open");
        let rx_addr = rx.local_addr().expect("addr");
        let envelope = || ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: chitchat::ChitchatMessage::BadCluster,
        };

        // Capture a correctly tagged datagram on a plain socket.
        let raw = UdpSocket::bind(local).await.expect("bind");
        tx.send(raw.local_addr().expect("addr"), envelope())
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let (len, _) = raw.recv_from(&mut buf).await.expect("recv");
        let good = buf[..len].to_vec();
        assert!(good.len() > TAG_LEN);

        let mut tampered = good.clone();
        tampered[0] ^= 1;
        let untagged = &good[..good.len() - TAG_LEN];
        let other_key = HmacSha256::new_from_slice(b"other").expect("key");
        let wrong_key = [untagged, &tag(&other_key, untagged)[..]].concat();
        for bad in [&tampered[..], untagged, &wrong_key, b"junk"] {
            raw.send_to(bad, rx_addr).await.expect("send");
        }
        raw.send_to(&good, rx_addr).await.expect("send");
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("deadline")
            .expect("recv");
        assert_eq!(got.envelope, envelope());
        assert_eq!(got.from_addr, raw.local_addr().expect("addr"));
        assert_eq!(rejected.load(Ordering::Relaxed), 4);

        // And end to end between two wrapped sockets.
        tx.send(rx_addr, envelope()).await.expect("send");
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("deadline")
            .expect("recv");
        assert_eq!(got.from_addr, tx.local_addr().expect("addr"));
        assert_eq!(rejected.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn in_memory_codec_is_refused() {
        let transport = HmacTransport::new(chitchat::transport::ChannelTransport::default(), b"k");
        let opened = transport.expect("transport").open(free_addr()).await;
        assert!(opened.is_err());
    }
}
