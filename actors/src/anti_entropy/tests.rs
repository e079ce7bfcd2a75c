//! The driver against in-memory stores: two replicas with different rows
//! converge in one round, and a round between replicas that agree moves no
//! rows.

use std::collections::BTreeMap;

use super::*;
use crate::ownership::partition_of;

/// Rows by shard group, then key; a row replaces one with a lower version.
#[derive(Default)]
struct MemoryStore {
    groups: Mutex<BTreeMap<String, BTreeMap<Vec<u8>, Row>>>,
    scans: AtomicU64,
}

impl MemoryStore {
    fn put(&self, group: &str, token: u64, key: &str, version: u64) {
        self.apply_rows(
            group,
            vec![Row {
                token,
                key: key.as_bytes().to_vec(),
                version,
                value: format!("v{version}").into_bytes(),
            }],
        )
        .expect("apply");
    }

    fn contents(&self) -> BTreeMap<String, BTreeMap<Vec<u8>, Row>> {
        self.groups.lock().clone()
    }
}

impl RangeStore for MemoryStore {
    type Error = std::convert::Infallible;

    fn shard_groups(&self) -> Result<Vec<String>, Self::Error> {
        Ok(self.groups.lock().keys().cloned().collect())
    }

    fn leaves(
        &self,
        group: &str,
        partitions: &PartitionSet,
        horizon: Version,
    ) -> Result<Vec<Leaf>, Self::Error> {
        let groups = self.groups.lock();
        let mut leaves: BTreeMap<u32, Leaf> = BTreeMap::new();
        for row in groups.get(group).into_iter().flat_map(|rows| rows.values()) {
            let partition = partition_of(row.token);
            if !partitions.contains(partition) || row.version >= horizon {
                continue;
            }
            let leaf = leaves.entry(partition as u32).or_insert(Leaf {
                partition: partition as u32,
                ..Leaf::default()
            });
            let mut bytes = row.key.clone();
            bytes.extend_from_slice(&row.version.to_be_bytes());
            leaf.hash = leaf.hash.wrapping_add(xxhash_rust::xxh3::xxh3_128(&bytes));
            leaf.count += 1;
        }
        Ok(leaves.into_values().collect())
    }

    fn scan_partition(&self, group: &str, partition: u32) -> Result<Vec<Row>, Self::Error> {
        self.scans.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .groups
            .lock()
            .get(group)
            .into_iter()
            .flat_map(|rows| rows.values())
            .filter(|row| partition_of(row.token) == partition as usize)
            .cloned()
            .collect())
    }

    fn apply_rows(&self, group: &str, rows: Vec<Row>) -> Result<(), Self::Error> {
        let mut groups = self.groups.lock();
        let stored = groups.entry(group.to_string()).or_default();
        for row in rows {
            match stored.get(&row.key) {
                Some(existing) if existing.version >= row.version => {}
                _ => {
                    stored.insert(row.key.clone(), row);
                }
            }
        }
        Ok(())
    }

    fn drop_partitions(&self, group: &str, partitions: &PartitionSet) -> Result<u64, Self::Error> {
        let mut groups = self.groups.lock();
        let Some(rows) = groups.get_mut(group) else {
            return Ok(0);
        };
        let before = rows.len();
        rows.retain(|_, row| !partitions.contains(partition_of(row.token)));
        Ok((before - rows.len()) as u64)
    }
}

/// Calls the other store's [`serve`] directly.
struct Direct {
    peer: Arc<MemoryStore>,
}

#[async_trait::async_trait]
impl AeTransport for Direct {
    fn plan(&self) -> Vec<PeerPlan> {
        vec![PeerPlan {
            id: "b".into(),
            partitions: PartitionSet::all(),
        }]
    }

    async fn call(&self, _peer: &str, request: AeRequest) -> Result<AeResponse, String> {
        // Through the wire format, as the node's RPC would.
        let bytes = rmp_serde::to_vec_named(&request).map_err(|e| e.to_string())?;
        let request: AeRequest = rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())?;
        serve(&*self.peer, request)
    }
}

fn token(i: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&i.to_be_bytes())
}

#[tokio::test]
async fn two_diverged_replicas_converge_in_one_round_and_then_agree() {
    let a = Arc::new(MemoryStore::default());
    let b = Arc::new(MemoryStore::default());
    for i in 0..1000 {
        a.put("g1", token(i), &format!("k{i}"), 1);
        b.put("g1", token(i), &format!("k{i}"), 1);
    }
    // a alone has some, b alone has others, and one newer version each way.
    a.put("g1", token(5000), "only-a", 1);
    b.put("g1", token(6000), "only-b", 1);
    b.put("g2", token(7000), "group-only-on-b", 1);
    a.put("g1", token(3), "k3", 2);
    b.put("g1", token(4), "k4", 3);
    let driver = Driver::new(a.clone(), Arc::new(Direct { peer: b.clone() }), 0);
    let report = driver.round().await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.shard_groups_repaired, 2);
    assert!(report.partitions_repaired >= 4 && report.partitions_repaired <= 5);
    assert_eq!(a.contents(), b.contents());
    assert_eq!(a.contents()["g1"][b"k3".as_slice()].version, 2);
    assert_eq!(a.contents()["g1"][b"k4".as_slice()].version, 3);
    // Only the differing partitions were read, not all ~1000 of them.
    assert!(a.scans.load(Ordering::Relaxed) <= 5);
    let scans_before = a.scans.load(Ordering::Relaxed) + b.scans.load(Ordering::Relaxed);
    let again = driver.round().await;
    assert!(again.in_sync(), "{again:?}");
    assert_eq!(again.shard_groups_in_sync, 2);
    assert_eq!(again.rows_received + again.rows_sent, 0);
    let scans_after = a.scans.load(Ordering::Relaxed) + b.scans.load(Ordering::Relaxed);
    assert_eq!(scans_before, scans_after, "an idle round scans nothing");
}

#[tokio::test]
async fn an_empty_replica_gets_everything_and_sends_nothing() {
    let a = Arc::new(MemoryStore::default());
    let b = Arc::new(MemoryStore::default());
    for i in 0..5000 {
        b.put("g", token(i), &format!("k{i}"), 1);
    }
    let driver = Driver::new(a.clone(), Arc::new(Direct { peer: b.clone() }), 0);
    let report = driver.round().await;
    assert_eq!(report.rows_received, 5000);
    assert_eq!(report.rows_sent, 0);
    assert_eq!(a.contents(), b.contents());
}

#[test]
fn roots_depend_on_every_leaf() {
    let leaves = vec![
        Leaf {
            partition: 1,
            hash: 10,
            count: 1,
        },
        Leaf {
            partition: 2,
            hash: 20,
            count: 2,
        },
    ];
    let mut changed = leaves.clone();
    changed[1].count = 3;
    assert_ne!(root(&leaves), root(&changed));
    assert_eq!(root(&leaves).1, 3);
}

#[tokio::test]
async fn scheduled_rounds_leave_settling_writes_to_replication_and_asked_rounds_do_not() {
    let a = Arc::new(MemoryStore::default());
    let b = Arc::new(MemoryStore::default());
    for i in 0..100 {
        a.put("g", token(i), &format!("k{i}"), 1);
        b.put("g", token(i), &format!("k{i}"), 1);
    }
    // A write a moment ago that has reached a but not yet b.
    let fresh = crate::hlc::version_at(std::time::SystemTime::now());
    a.put("g", token(500), "fresh", fresh);
    let driver = Driver::new(a.clone(), Arc::new(Direct { peer: b.clone() }), 0)
        .with_settle(Duration::from_secs(60));
    let scheduled = driver.round().await;
    assert!(scheduled.in_sync(), "{scheduled:?}");
    assert_eq!(scheduled.rows_received + scheduled.rows_sent, 0);
    assert_ne!(a.contents(), b.contents());
    // A round someone asked for compares everything.
    let asked = driver.round_all().await;
    assert_eq!(asked.partitions_repaired, 1, "{asked:?}");
    assert_eq!(a.contents(), b.contents());
    // An old difference is repaired by scheduled rounds too.
    b.put("g", token(7), "old-only-on-b", 2);
    let scheduled = driver.round().await;
    assert_eq!(scheduled.partitions_repaired, 1, "{scheduled:?}");
    assert_eq!(a.contents(), b.contents());
}
