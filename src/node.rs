//! A node: opens the storage engine, serves the HTTP API, and shuts both down
//! cleanly on SIGINT or SIGTERM.
//!
//! The cluster machinery (internode RPC on its own runtime, gossip
//! membership, the ring) starts here too; a cluster of one is a node.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use actix_web::HttpServer;

use crate::cluster;
use crate::config::Config;
use crate::http::{self, ApiState};
use crate::storage::{Storage, StorageOptions};

/// Errors that stop a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(String),
}

const NODE_ID_FILE: &str = "node_id";

/// The node's stable id: the configured one, checked against the one persisted
/// on first start, or a generated one persisted now.
pub fn resolve_node_id(data_dir: &Path, configured: Option<&str>) -> Result<String, NodeError> {
    let path = data_dir.join(NODE_ID_FILE);
    let persisted = match fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error.into()),
    };
    match (persisted, configured) {
        (Some(persisted), Some(configured)) if persisted != configured => {
            Err(NodeError::Config(format!(
                "node.id: the data dir {} belongs to node {persisted:?}, not {configured:?}",
                data_dir.display()
            )))
        }
        (Some(persisted), _) => Ok(persisted),
        (None, configured) => {
            let id = configured.map(str::to_string).unwrap_or_else(|| {
                format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            });
            fs::create_dir_all(data_dir)?;
            let temporary = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
            fs::write(&temporary, format!("{id}\n"))?;
            fs::File::open(&temporary)?.sync_all()?;
            fs::rename(&temporary, &path)?;
            Ok(id)
        }
    }
}

/// Run a node until a shutdown signal; blocks the calling thread.
pub fn run(config: Config) -> Result<(), NodeError> {
    fs::create_dir_all(&config.node.data_dir)?;
    let node_id = resolve_node_id(&config.node.data_dir, config.node.id.as_deref())?;
    cluster::check_not_left(&config, &node_id).map_err(NodeError::Config)?;
    let storage = Storage::open(StorageOptions {
        data_dir: config.node.data_dir.clone(),
        wal_fsync: config.storage.wal_fsync,
        buffer_max_bytes: config.storage.buffer_max_size.as_u64(),
        buffer_max_age: config.storage.buffer_max_age,
        retention_check_interval: config.storage.retention_check_interval,
        background_compaction: true,
        backpressure_wait: std::time::Duration::from_secs(10),
    })?;
    let max_body_size = usize::try_from(config.http.max_body_size.as_u64()).unwrap_or(usize::MAX);
    let bind = config.http.bind;
    let prepared = cluster::prepare(&config)?;
    tracing::info!(node_id = %node_id, http = %bind, data_dir = %config.node.data_dir.display(), "starting node");
    let served = actix_web::rt::System::new().block_on({
        let storage = storage.clone();
        async move {
            let (cluster, runtime) = prepared
                .start(&config, &node_id, storage.clone())
                .await
                .map_err(|error| NodeError::Cluster(format!("{error:#}")))?;
            tracing::info!(
                rpc = %cluster.rpc_addr,
                gossip = %cluster.gossip_addr,
                seeds = ?config.cluster.seeds,
                "joined the cluster gossip"
            );
            let state = Arc::new(ApiState {
                storage,
                max_body_size,
                query: config.query.clone(),
                cluster: Some(cluster.clone()),
                metrics: http::Metrics::default(),
            });
            let server = HttpServer::new(move || http::app(state.clone()))
                .bind(bind)?
                .shutdown_timeout(10)
                .run();
            // A decommissioned node stops once it has left the ring.
            let handle = server.handle();
            let mut left = cluster.left_signal();
            actix_web::rt::spawn(async move {
                while !*left.borrow_and_update() {
                    if left.changed().await.is_err() {
                        return;
                    }
                }
                tracing::info!("decommissioned: stopping");
                handle.stop(true).await;
            });
            tracing::info!(http = %bind, "ready for queries and writes");
            let result = server.await;
            cluster.leave();
            Ok::<_, NodeError>((result, runtime))
        }
    });
    let (served, runtime) = match served {
        Ok((served, runtime)) => (served.map_err(NodeError::from), Some(runtime)),
        Err(error) => (Err(error), None),
    };
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    }
    tracing::info!("http server stopped; flushing storage");
    let closed = storage.close();
    served?;
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_persisted_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = resolve_node_id(dir.path(), None).expect("generate");
        assert!(generated.starts_with("node-"));
        assert_eq!(resolve_node_id(dir.path(), None).expect("again"), generated);
        assert_eq!(
            resolve_node_id(dir.path(), Some(&generated)).expect("same"),
            generated
        );
        let error = resolve_node_id(dir.path(), Some("other")).expect_err("mismatch");
        assert!(error.to_string().contains("node.id"), "{error}");
    }
}
