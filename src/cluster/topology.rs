//! The topology snapshot: every member ever seen (from gossip, and from the
//! members file so that a restarted node knows the ring before gossip has
//! caught up) and the ring over them, republished on every change.
//!
//! A member that is down stays in the ring: its replicas keep their place
//! and the write coordinator counts it as a failed replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dynaflux_actors::membership::MembershipSnapshot;
use dynaflux_actors::Ring;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A member as the hot path sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    #[serde(skip)]
    pub live: bool,
    #[serde(skip)]
    pub state: String,
}

/// Members (by id) and the ring over them.
#[derive(Debug)]
pub struct Topology {
    pub ring: Arc<Ring>,
    pub members: BTreeMap<String, MemberView>,
}

pub(super) struct Settings {
    pub node_id: String,
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub rf: usize,
    pub vnodes: u32,
    pub members_file: PathBuf,
}

fn load_members(path: &PathBuf) -> BTreeMap<String, MemberView> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable members file");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

fn save_members(path: &PathBuf, members: &BTreeMap<String, MemberView>) {
    let temporary = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(members)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&temporary, bytes))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "could not save the members file");
    }
}

/// Start publishing topology snapshots built from membership snapshots.
pub(super) fn publish(
    runtime: &tokio::runtime::Runtime,
    mut snapshots: watch::Receiver<Arc<MembershipSnapshot>>,
    settings: Settings,
) -> watch::Receiver<Arc<Topology>> {
    let mut known = load_members(&settings.members_file);
    for member in known.values_mut() {
        member.live = false;
        member.state = "unknown".into();
    }
    known.insert(
        settings.node_id.clone(),
        MemberView {
            rpc_addr: settings.rpc_addr,
            http_addr: settings.http_addr,
            live: true,
            state: "normal".into(),
        },
    );
    save_members(&settings.members_file, &known);
    let ring = Arc::new(Ring::new(
        known.keys().cloned(),
        settings.vnodes,
        settings.rf,
    ));
    let (sender, receiver) = watch::channel(Arc::new(Topology {
        ring: ring.clone(),
        members: known.clone(),
    }));
    runtime.spawn(async move {
        let mut ring = ring;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            let before: Vec<String> = known.keys().cloned().collect();
            let mut addresses_changed = false;
            for member in &snapshot.members {
                let view = MemberView {
                    rpc_addr: member.rpc_addr,
                    http_addr: member.http_addr,
                    live: member.live || member.id == settings.node_id,
                    state: member.state.to_string(),
                };
                let previous = known.insert(member.id.clone(), view.clone());
                addresses_changed |= previous
                    .is_none_or(|p| p.rpc_addr != view.rpc_addr || p.http_addr != view.http_addr);
            }
            // Members known only from the file are not live until gossip says so.
            for (id, member) in known.iter_mut() {
                if *id != settings.node_id && snapshot.get(id).is_none() {
                    member.live = false;
                }
            }
            let after: Vec<String> = known.keys().cloned().collect();
            if addresses_changed {
                save_members(&settings.members_file, &known);
            }
            if before != after {
                ring = Arc::new(Ring::new(after, settings.vnodes, settings.rf));
                tracing::info!(members = ?known.keys().collect::<Vec<_>>(), "ring changed");
            }
            let topology = Topology {
                ring: ring.clone(),
                members: known.clone(),
            };
            if sender.send(Arc::new(topology)).is_err() || snapshots.changed().await.is_err() {
                break;
            }
        }
    });
    receiver
}
