use std::time::Duration;

use super::*;
use crate::lineproto::{self, Precision};

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(StorageOptions::for_test(dir.to_path_buf())).expect("open")
}

fn write(storage: &Storage, db: &str, body: &str) -> WriteOutcome {
    let batch = lineproto::parse(body.as_bytes(), Precision::Nanosecond, 0);
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    storage.write(db, None, &batch.points).expect("write")
}

fn values(
    storage: &Storage,
    db: &str,
    measurement: &str,
    field: &str,
) -> Vec<(String, Vec<(i64, Value)>)> {
    storage
        .series(db, measurement)
        .expect("series")
        .into_iter()
        .map(|series| {
            let points = storage
                .read_field(db, "autogen", series.id, field, (i64::MIN, i64::MAX), None)
                .expect("read");
            (series.key, points)
        })
        .collect()
}

#[test]
fn write_read_flush_reopen_keeps_exactly_one_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    storage.create_database("db", None).expect("create");
    write(
        &storage,
        "db",
        "cpu,host=a v=1 10\ncpu,host=a v=2 20\ncpu,host=b v=3 10\ncpu,host=a s=\"x\" 30",
    );
    let expected = vec![
        (
            "cpu,host=a".to_string(),
            vec![(10, Value::Float(1.0)), (20, Value::Float(2.0))],
        ),
        ("cpu,host=b".to_string(), vec![(10, Value::Float(3.0))]),
    ];
    assert_eq!(values(&storage, "db", "cpu", "v"), expected);
    storage.flush().expect("flush");
    assert_eq!(values(&storage, "db", "cpu", "v"), expected);
    // overwrite after the flush: the newer version wins
    write(&storage, "db", "cpu,host=a v=9 20");
    assert_eq!(
        values(&storage, "db", "cpu", "v")[0].1,
        vec![(10, Value::Float(1.0)), (20, Value::Float(9.0))]
    );
    storage.close().expect("close");
    drop(storage);
    let storage = open(dir.path());
    assert_eq!(
        values(&storage, "db", "cpu", "v")[0].1,
        vec![(10, Value::Float(1.0)), (20, Value::Float(9.0))]
    );
    assert_eq!(
        values(&storage, "db", "cpu", "s")[0].1,
        vec![(30, Value::String("x".into()))]
    );
    assert_eq!(
        storage.tag_values("db", "cpu", "host").expect("tags"),
        vec!["a", "b"]
    );
    assert_eq!(
        storage
            .series_with_tag("db", "cpu", "host", "b")
            .expect("postings")
            .len(),
        1
    );
    storage.close().expect("close");
}

#[test]
fn unflushed_writes_survive_a_crash_through_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let storage = open(dir.path());
        storage.create_database("db", None).expect("create");
        write(&storage, "db", "m,t=1 v=1i 1\nm,t=1 v=2i 2");
        storage.flush().expect("flush");
        write(&storage, "db", "m,t=1 v=3i 3");
        // no close: the buffer is lost, the WAL is not
    }
    let storage = open(dir.path());
    let got = values(&storage, "db", "m", "v");
    assert_eq!(
        got[0].1,
        vec![
            (1, Value::Integer(1)),
            (2, Value::Integer(2)),
            (3, Value::Integer(3))
        ]
    );
    storage.flush().expect("flush");
    drop(storage);
    let storage = open(dir.path());
    assert_eq!(values(&storage, "db", "m", "v")[0].1.len(), 3);
}

#[test]
fn field_type_conflicts_follow_influxdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    storage.create_database("db", None).expect("create");
    write(&storage, "db", "m,t=a f=1 1000000000");
    let outcome = write(
        &storage,
        "db",
        "m,t=b f=2i 4000000000\nm,t=c f=5 5000000000",
    );
    assert_eq!(outcome.written, 1);
    assert_eq!(outcome.dropped, 1);
    assert_eq!(
        outcome.conflict.as_deref(),
        Some("field type conflict: input field \"f\" on measurement \"m\" is type integer, already exists as type float")
    );
    let batch = lineproto::parse(b"n v=1 1\nn v=1i 2", Precision::Nanosecond, 0);
    assert!(matches!(
        storage.write("db", None, &batch.points),
        Err(StorageError::WriteRejected(_))
    ));
    let outcome = write(&storage, "db", "tt time=1 1");
    assert_eq!(outcome.dropped, 1);
    let outcome = write(&storage, "db", "tt v=1,time=2 1");
    assert_eq!((outcome.written, outcome.dropped), (1, 0));
    assert_eq!(
        storage.field_types("db", "tt").expect("fields"),
        vec![("v".to_string(), FieldType::Float)]
    );
}

#[test]
fn drop_measurement_and_database_remove_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    storage.create_database("db", None).expect("create");
    write(&storage, "db", "m1,host=a v=1 1\nm2,host=b v=2 1");
    storage.flush().expect("flush");
    storage.drop_measurement("db", "m1").expect("drop");
    assert_eq!(storage.measurements("db").expect("m"), vec!["m2"]);
    write(&storage, "db", "m1,host=a v=5i 2");
    assert_eq!(
        values(&storage, "db", "m1", "v")[0].1,
        vec![(2, Value::Integer(5))]
    );
    storage.drop_database("db").expect("drop db");
    assert!(!storage.database_exists("db"));
    storage.create_database("db", None).expect("again");
    assert!(storage.measurements("db").expect("m").is_empty());
    storage.close().expect("close");
    drop(storage);
    let storage = open(dir.path());
    assert!(storage.measurements("db").expect("m").is_empty());
}

#[test]
fn retention_drops_expired_shard_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    let spec = RetentionPolicySpec {
        name: "short".into(),
        duration: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    storage.create_database("db", Some(spec)).expect("create");
    let hour: i64 = 3_600_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let outcome = write(
        &storage,
        "db",
        &format!(
            "m v=1 {now}\nm v=2 {}\nm v=0 {}",
            now + 3 * hour,
            now - 2 * hour
        ),
    );
    assert_eq!(
        outcome.conflict.as_deref(),
        Some("points beyond retention policy")
    );
    storage.flush().expect("flush");
    let read = |storage: &Storage| {
        let series = storage.series("db", "m").expect("series");
        storage
            .read_field("db", "short", series[0].id, "v", (i64::MIN, i64::MAX), None)
            .expect("read")
    };
    assert_eq!(read(&storage).len(), 2);
    assert_eq!(
        storage
            .enforce_retention(now + 3 * hour)
            .expect("retention"),
        1
    );
    assert_eq!(read(&storage), vec![(now + 3 * hour, Value::Float(2.0))]);
}

#[test]
fn concurrent_writers_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = StorageOptions::for_test(dir.path().to_path_buf());
    options.wal_fsync = true;
    let storage = Storage::open(options).expect("open");
    storage.create_database("db", None).expect("create");
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let storage = storage.clone();
            scope.spawn(move || {
                for i in 0..50 {
                    write(&storage, "db", &format!("m,w={writer} v={i} {i}"));
                }
            });
        }
    });
    let got = values(&storage, "db", "m", "v");
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(_, points)| points.len() == 50));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Reading only the first or last n timestamps gives the ends of the
    /// full read, however the points lie over blocks (overlapping ones,
    /// overwrites) and the write buffer.
    #[test]
    fn take_gives_the_ends_of_the_full_read(
        batches in proptest::collection::vec(proptest::collection::vec((0i64..200, 0i32..5), 1..30), 1..6),
        n in 1usize..40,
        flush_mask in 0u8..64,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.create_database("db", None).expect("create");
        for (index, batch) in batches.iter().enumerate() {
            let body: String = batch.iter().map(|(t, v)| format!("m v={v} {t}\n")).collect();
            write(&storage, "db", &body);
            if flush_mask & (1 << index) != 0 {
                storage.flush().expect("flush");
            }
        }
        let id = storage.series("db", "m").expect("series")[0].id;
        let read = |take| storage.read_field("db", "autogen", id, "v", (20, 180), take).expect("read");
        let all = read(None);
        let first: Vec<_> = all.iter().take(n).cloned().collect();
        let last: Vec<_> = all[all.len().saturating_sub(n)..].to_vec();
        proptest::prop_assert_eq!(read(Some(Take::First(n))), first);
        proptest::prop_assert_eq!(read(Some(Take::Last(n))), last);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// A full read is the last value written at each timestamp, however
    /// the points lie over blocks and the write buffer: batches that move
    /// forward in time (blocks that follow one another and buffered points
    /// after them, the read's fast path) as well as ones that go back.
    #[test]
    fn a_read_is_the_last_write_per_timestamp(
        batches in proptest::collection::vec(proptest::collection::vec((0i64..60, 0i32..5), 1..30), 1..6),
        forward in proptest::bool::ANY,
        flush_mask in 0u8..64,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.create_database("db", None).expect("create");
        let mut model = std::collections::BTreeMap::new();
        for (index, batch) in batches.iter().enumerate() {
            let base = if forward { index as i64 * 100 } else { 0 };
            let body: String = batch.iter().map(|(t, v)| format!("m v={v} {}\n", base + t)).collect();
            for (t, v) in batch {
                model.insert(base + t, Value::Float(f64::from(*v)));
            }
            write(&storage, "db", &body);
            if flush_mask & (1 << index) != 0 {
                storage.flush().expect("flush");
            }
        }
        let id = storage.series("db", "m").expect("series")[0].id;
        let all = storage.read_field("db", "autogen", id, "v", (i64::MIN, i64::MAX), None).expect("read");
        let expected: Vec<(i64, Value)> = model.into_iter().collect();
        proptest::prop_assert_eq!(all, expected);
    }
}

#[test]
fn index_only_writes_register_series_without_points_and_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let storage = open(dir.path());
        storage.create_database("db", None).expect("create");
        let batch = lineproto::parse(
            b"cpu,host=a v=1 10\nmem,host=b free=2i 10",
            Precision::Nanosecond,
            0,
        );
        let options = WriteOptions {
            version: None,
            values: false,
        };
        storage
            .write_with("db", None, &batch.points, options)
            .expect("index");
        assert_eq!(storage.points_stored(), 0);
        assert_eq!(
            values(&storage, "db", "cpu", "v"),
            vec![("cpu,host=a".to_string(), vec![])]
        );
        // A versioned write: an older version loses to a newer one, whatever the order.
        let newer = lineproto::parse(b"cpu,host=a v=2 10", Precision::Nanosecond, 0);
        let older = lineproto::parse(b"cpu,host=a v=1 10", Precision::Nanosecond, 0);
        let at = |version| WriteOptions {
            version: Some(version),
            values: true,
        };
        storage
            .write_with("db", None, &newer.points, at(200 << 16))
            .expect("newer");
        storage
            .write_with("db", None, &older.points, at(100 << 16))
            .expect("older");
        assert_eq!(storage.points_stored(), 2);
        assert_eq!(
            values(&storage, "db", "cpu", "v")[0].1,
            vec![(10, Value::Float(2.0))]
        );
        storage.close().expect("close");
    }
    let storage = open(dir.path());
    assert_eq!(
        storage.measurements("db").expect("measurements"),
        vec!["cpu", "mem"]
    );
    assert_eq!(
        storage.field_types("db", "mem").expect("fields"),
        vec![("free".to_string(), FieldType::Integer)]
    );
    assert_eq!(
        values(&storage, "db", "cpu", "v")[0].1,
        vec![(10, Value::Float(2.0))]
    );
}

/// Every leaf of every shard group of `storage`, over every point.
fn all_leaves(storage: &Storage) -> Vec<(String, Vec<dynaflux_actors::Leaf>)> {
    leaves_at(storage, u64::MAX)
}

/// Copy every row of `from` to `to`, as an anti-entropy exchange would.
fn copy_rows(from: &Storage, to: &Storage) {
    use dynaflux_actors::RangeStore;
    for (group, leaves) in all_leaves(from) {
        for leaf in leaves {
            let rows = from.scan_partition(&group, leaf.partition).expect("scan");
            RangeStore::apply_rows(to, &group, rows).expect("apply");
        }
    }
}

#[test]
fn leaves_are_equal_for_equal_data_however_it_arrived_and_rows_repair_the_difference() {
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (open(dir_a.path()), open(dir_b.path()));
    for storage in [&a, &b] {
        storage.create_database("db", None).expect("create");
    }
    let lines: Vec<String> = (0..2000)
        .map(|i| {
            format!(
                "cpu,host=h{} v={i}.5,n={i}i,s=\"x{i}\",b=true {}",
                i % 37,
                i * 1_000_000_000
            )
        })
        .collect();
    // Same points, one version for the whole batch on both (as replicas of
    // one coordinated write), in different orders and flushes.
    let body = lines.join("\n");
    let batch = lineproto::parse(body.as_bytes(), Precision::Nanosecond, 0);
    let options = WriteOptions {
        version: Some(77),
        values: true,
    };
    a.write_with("db", None, &batch.points, options).expect("a");
    a.flush().expect("flush");
    let reversed: Vec<String> = lines.iter().rev().cloned().collect();
    let body_b = reversed.join("\n");
    let batch_b = lineproto::parse(body_b.as_bytes(), Precision::Nanosecond, 0);
    b.write_with("db", None, &batch_b.points, options)
        .expect("b");
    assert_eq!(all_leaves(&a), all_leaves(&b));
    assert!(!all_leaves(&a).is_empty());
    // b misses a write: its leaves differ, and rows from a repair them,
    // with a's versions (a leaf hashes versions too).
    write(
        &a,
        "db",
        "cpu,host=h1 v=-1 5000000000000\ncpu,host=new v=2 6000000000000",
    );
    assert_ne!(all_leaves(&a), all_leaves(&b));
    copy_rows(&a, &b);
    assert_eq!(all_leaves(&a), all_leaves(&b));
    assert_eq!(values(&a, "db", "cpu", "v"), values(&b, "db", "cpu", "v"));
    // Applying the same rows again changes nothing.
    copy_rows(&a, &b);
    assert_eq!(all_leaves(&a), all_leaves(&b));
    // Restarted (leaves hashed again from disk and the WAL): the same.
    let before = all_leaves(&b);
    drop(b);
    let b = open(dir_b.path());
    assert_eq!(all_leaves(&b), before);
    // A delete changes the leaves.
    let id = a.series_ids("db", &["cpu,host=new"]).expect("ids")[0].expect("id");
    a.delete_points("db", &[id], i64::MIN, i64::MAX)
        .expect("delete");
    assert_ne!(all_leaves(&a), all_leaves(&b));
}

#[test]
fn a_delete_or_drop_that_arrives_late_keeps_the_points_written_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    storage.create_database("db", None).expect("create");
    let versioned = |body: &str, version: u64| {
        let batch = lineproto::parse(body.as_bytes(), Precision::Nanosecond, 0);
        let options = WriteOptions {
            version: Some(version),
            values: true,
        };
        storage
            .write_with("db", None, &batch.points, options)
            .expect("write");
    };
    // Points at version 100 (flushed) and 300 (one flushed, one buffered).
    versioned("m,host=a v=1 1\nm,host=b v=1 1\nk,host=a v=1 1", 100);
    versioned("m,host=a v=3 3", 300);
    storage.flush().expect("flush");
    versioned("m,host=a v=4 4", 300);
    // A peer's DROP MEASUREMENT m at version 200 reaches this node late.
    with_delete_version(200, || storage.drop_measurement("db", "m")).expect("drop");
    assert_eq!(
        values(&storage, "db", "m", "v"),
        vec![(
            "m,host=a".to_string(),
            vec![(3, Value::Float(3.0)), (4, Value::Float(4.0))]
        )]
    );
    let mut measurements = storage.measurements("db").expect("m");
    measurements.sort();
    assert_eq!(measurements, vec!["k", "m"]);
    // A copy of a point older than the drop is not stored.
    versioned("m,host=b v=9 9", 150);
    assert_eq!(values(&storage, "db", "m", "v").len(), 1);
    // A late DELETE of k (version 50, older than k's points) deletes nothing.
    let id = storage.series_ids("db", &["k,host=a"]).expect("ids")[0].expect("id");
    with_delete_version(50, || {
        storage.delete_points("db", &[id], i64::MIN, i64::MAX)
    })
    .expect("delete");
    assert_eq!(values(&storage, "db", "k", "v").len(), 1);
    // A drop at a version newer than every point removes the measurement.
    with_delete_version(400, || storage.drop_measurement("db", "m")).expect("drop");
    assert_eq!(storage.measurements("db").expect("m"), vec!["k"]);
    // And all of it holds after a restart.
    storage.close().expect("close");
    drop(storage);
    let storage = open(dir.path());
    assert_eq!(storage.measurements("db").expect("m"), vec!["k"]);
    assert!(values(&storage, "db", "m", "v").is_empty());
}

fn block_counts(storage: &Storage) -> Vec<usize> {
    storage.engine.block_counts()
}

#[test]
fn compaction_merges_overlapping_and_small_blocks_without_changing_reads_or_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions {
        background_compaction: false,
        ..StorageOptions::for_test(dir.path().to_path_buf())
    })
    .expect("open");
    storage.create_database("db", None).expect("create");
    // Field v of series a: 10 flushes of points that interleave in time
    // (late writes), with overwrites at newer versions.
    for round in 0..10i64 {
        let body: Vec<String> = (0..50i64)
            .map(|i| format!("m,host=a v={} {}", round * 100 + i, i * 10 + round))
            .collect();
        write(&storage, "db", &body.join("\n"));
        write(&storage, "db", &format!("m,host=a v=-{round} 5"));
        storage.flush().expect("flush");
    }
    // Series b: blocks that do not overlap, but many and small.
    for round in 0..SMALL_BLOCK_TEST_ROUNDS {
        write(
            &storage,
            "db",
            &format!("m,host=b v={round} {}", 1000 + round),
        );
        storage.flush().expect("flush");
    }
    // Series c: one block, nothing to do.
    write(&storage, "db", "m,host=c v=1 1");
    storage.flush().expect("flush");
    let before = values(&storage, "db", "m", "v");
    let leaves_before = all_leaves(&storage);
    let mut counts = block_counts(&storage);
    counts.sort_unstable();
    assert_eq!(counts, vec![1, SMALL_BLOCK_TEST_ROUNDS as usize, 10]);
    storage.engine.compact_pending().expect("compact");
    assert_eq!(block_counts(&storage), vec![1, 1, 1]);
    assert_eq!(
        storage.engine.blocks_compacted(),
        10 + SMALL_BLOCK_TEST_ROUNDS as u64
    );
    assert_eq!(values(&storage, "db", "m", "v"), before);
    // The newest version of the overwritten point won.
    assert!(before[0].1.contains(&(5, Value::Float(-9.0))));
    assert_eq!(all_leaves(&storage), leaves_before);
    // Nothing more to do, and the result survives a restart.
    storage.engine.compact_pending().expect("compact again");
    assert_eq!(block_counts(&storage), vec![1, 1, 1]);
    storage.close().expect("close");
    drop(storage);
    let storage = open(dir.path());
    assert_eq!(values(&storage, "db", "m", "v"), before);
}

const SMALL_BLOCK_TEST_ROUNDS: i64 = 9;

#[test]
fn a_write_waits_while_flushes_fall_behind_and_is_refused_if_they_never_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions {
        buffer_max_bytes: 4096,
        backpressure_wait: Duration::from_millis(400),
        ..StorageOptions::for_test(dir.path().to_path_buf())
    })
    .expect("open");
    storage.create_database("db", None).expect("create");
    let batch = |from: i64| -> String {
        (from..from + 1000)
            .map(|i| format!("m,host=a v={i} {i}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Flushes are stuck: the first batch fills the buffer past 4x its size,
    // the next write waits, then is refused rather than grow memory.
    let hold = storage.engine.hold_flushes();
    write(&storage, "db", &batch(0));
    let second = batch(1000);
    let parsed = lineproto::parse(second.as_bytes(), Precision::Nanosecond, 0);
    let started = std::time::Instant::now();
    let refused = storage.write("db", None, &parsed.points);
    assert!(
        matches!(refused, Err(StorageError::Overloaded)),
        "{refused:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Once flushes run again, a waiting write goes through.
    let writer = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            let third = batch(2000);
            let parsed = lineproto::parse(third.as_bytes(), Precision::Nanosecond, 0);
            storage.write("db", None, &parsed.points).map(|o| o.written)
        })
    };
    drop(hold);
    assert_eq!(writer.join().expect("join").expect("written"), 1000);
    let stored = &values(&storage, "db", "m", "v")[0].1;
    assert_eq!(stored.len(), 2000);
    assert!(stored
        .iter()
        .all(|(t, _)| (0..1000).contains(t) || (2000..3000).contains(t)));
}

/// Every leaf of every shard group at `horizon`.
fn leaves_at(storage: &Storage, horizon: u64) -> Vec<(String, Vec<dynaflux_actors::Leaf>)> {
    use dynaflux_actors::RangeStore;
    let mut groups = storage.shard_groups().expect("groups");
    groups.sort();
    groups
        .into_iter()
        .map(|group| {
            let leaves = storage
                .leaves(&group, &dynaflux_actors::PartitionSet::all(), horizon)
                .expect("leaves");
            (group, leaves)
        })
        .collect()
}

/// The leaves at `horizon` hashed from the data, nothing kept.
fn leaves_from_scratch(
    storage: &Storage,
    horizon: u64,
) -> Vec<(String, Vec<dynaflux_actors::Leaf>)> {
    storage.engine.forget_leaves();
    leaves_at(storage, horizon)
}

#[test]
fn appends_keep_leaves_up_to_date_without_reading_data_and_overwrites_rehash_one_leaf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    storage.create_database("db", None).expect("create");
    let body: Vec<String> = (0..500i64)
        .map(|i| format!("cpu,host=h{} v={i},n={i}i {}", i % 50, i * 1_000_000_000))
        .collect();
    write(&storage, "db", &body.join("\n"));
    storage.flush().expect("flush");
    write(&storage, "db", "cpu,host=far v=1 100000000000000");
    let first = all_leaves(&storage);
    assert_eq!(first, leaves_from_scratch(&storage, u64::MAX));
    let rehashed = storage.engine.leaves_rehashed();
    // Appends (later points, new series, a new field) read nothing.
    let appends: Vec<String> = (500..1500i64)
        .map(|i| format!("cpu,host=h{} v={i},n={i}i {}", i % 70, i * 1_000_000_000))
        .chain(["cpu,host=h2 s=\"x\" 9999000000000".to_string()])
        .collect();
    write(&storage, "db", &appends.join("\n"));
    let after = all_leaves(&storage);
    assert_eq!(storage.engine.leaves_rehashed(), rehashed);
    assert_ne!(after, first);
    assert_eq!(after, leaves_from_scratch(&storage, u64::MAX));
    // An overwrite of a stored point and a late point re-hash their leaves only.
    let _ = all_leaves(&storage);
    let rehashed = storage.engine.leaves_rehashed();
    write(
        &storage,
        "db",
        "cpu,host=h3 v=-1 3000000000\ncpu,host=h4 v=7 4500000000",
    );
    let after = all_leaves(&storage);
    assert_eq!(storage.engine.leaves_rehashed() - rehashed, 2);
    assert_eq!(after, leaves_from_scratch(&storage, u64::MAX));
    // A horizon: the leaves over the points written before it, the same as
    // hashed from the data at that horizon.
    let horizon = {
        let now = dynaflux_actors::hlc::version_at(std::time::SystemTime::now());
        let boundary = (now / (1000 << 16) + 1) * (1000 << 16);
        // Wait (bounded) until the clock has passed the next whole second.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while dynaflux_actors::hlc::version_at(std::time::SystemTime::now()) < boundary {
            assert!(std::time::Instant::now() < deadline, "clock stuck");
            std::thread::sleep(Duration::from_millis(10));
        }
        boundary
    };
    let _ = leaves_at(&storage, horizon);
    let rehashed = storage.engine.leaves_rehashed();
    write(
        &storage,
        "db",
        "cpu,host=h5 v=5 20000000000000\ncpu,host=new v=1 1",
    );
    let before_horizon = leaves_at(&storage, horizon);
    assert_eq!(storage.engine.leaves_rehashed(), rehashed);
    let everything = leaves_at(&storage, u64::MAX);
    assert_ne!(before_horizon, everything);
    assert_eq!(before_horizon, leaves_from_scratch(&storage, horizon));
    assert_eq!(everything, leaves_from_scratch(&storage, u64::MAX));
}

#[test]
fn leaves_hashed_while_writes_land_end_equal_to_leaves_hashed_from_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path());
    storage.create_database("db", None).expect("create");
    let writer = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            for step in 0..200i64 {
                let body: Vec<String> = (0..100i64)
                    .map(|i| {
                        let time = (step * 100 + i) * 1_000_000_000;
                        format!("cpu,host=h{} v={step} {time}", i % 40)
                    })
                    .collect();
                write(&storage, "db", &body.join("\n"));
                if step % 50 == 0 {
                    storage.flush().expect("flush");
                }
            }
        })
    };
    // Hash from scratch again and again while the writes land, then keep
    // the book: it must end where hashing the data gives.
    while !writer.is_finished() {
        storage.engine.forget_leaves();
        let _ = all_leaves(&storage);
    }
    writer.join().expect("writer");
    let kept = all_leaves(&storage);
    assert_eq!(kept, leaves_from_scratch(&storage, u64::MAX));
    assert_eq!(
        kept.iter()
            .flat_map(|(_, leaves)| leaves.iter().map(|leaf| leaf.count))
            .sum::<u64>(),
        20_000
    );
}
