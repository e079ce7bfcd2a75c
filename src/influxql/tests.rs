use proptest::prelude::*;

use super::ast::*;
use super::*;
use crate::lineproto::{self, Precision};
use crate::storage::{StorageOptions, Value as StoredValue};

fn error_of(text: &str) -> String {
    parse(text)
        .map(|q| format!("{q:?}"))
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn influxdb_parse_error_texts() {
    assert_eq!(
        error_of("SELECT count(usage_user) FROM cpu; SELEKT 1"),
        "error parsing query: found SELEKT, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL at line 1, char 36"
    );
    assert_eq!(
        error_of("SELECT FROM cpu"),
        "error parsing query: found FROM, expected identifier, string, number, bool at line 1, char 8"
    );
    assert_eq!(
        error_of("SELECT usage_user FROM cpu SLIMIT -1"),
        "error parsing query: found -, expected integer at line 1, char 35"
    );
    assert_eq!(
        error_of("SELECT usage_user FROM cpu ORDER BY host"),
        "error parsing query: only ORDER BY time supported at this time"
    );
    assert_eq!(
        error_of("SHOW MEASUREMENTS WITH MEASUREMENT = 'disk'"),
        "error parsing query: found disk, expected identifier at line 1, char 37"
    );
    assert!(error_of("SELECT usage_user FROM cpu WHERE host =~ /[/")
        .starts_with("error parsing query: error parsing regexp:"));
}

#[test]
fn statements_print_as_influxdb_prints_them() {
    let query = parse(
        "drop database \"scratch_get\"; create database x with duration 7d name r; SHOW DATABASES",
    )
    .expect("parse");
    assert_eq!(
        query.write_statements(),
        vec![
            (0, "DROP DATABASE scratch_get".to_string()),
            (1, "CREATE DATABASE x WITH DURATION 1w NAME r".to_string())
        ]
    );
    let select = "SELECT \"a b\", v::float AS x FROM db.rp.m WHERE time > now() - 1h AND host =~ /a\\/b/ GROUP BY host fill(none) ORDER BY time DESC LIMIT 10 OFFSET 2";
    let printed = parse(select).expect("parse").statements[0].to_string();
    assert_eq!(
        parse(&printed).expect("reparse"),
        parse(select).expect("parse")
    );
}

fn ident() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_][a-z0-9_]{0,6}", "[a-zA-Z0-9 ,.=\"'-]{1,8}"]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        ident().prop_map(|name| Expr::VarRef {
            name,
            data_type: None
        }),
        (0i64..1_000_000).prop_map(Expr::Integer),
        (0.5f64..1e6).prop_map(Expr::Number),
        "[a-z '\\\\]{0,8}".prop_map(Expr::String),
        any::<bool>().prop_map(Expr::Boolean),
        (1i64..1000).prop_map(|n| Expr::Duration(n * 1_000_000_000)),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone(), 0usize..6).prop_map(|(l, r, op)| {
                let op = [
                    BinaryOp::Add,
                    BinaryOp::Mul,
                    BinaryOp::Eq,
                    BinaryOp::Lt,
                    BinaryOp::And,
                    BinaryOp::Or,
                ][op];
                Expr::Paren(Box::new(Expr::binary(op, l, r)))
            }),
            inner.prop_map(|arg| Expr::Call {
                name: "mean".into(),
                args: vec![arg]
            }),
        ]
    })
}

proptest! {
    #[test]
    fn printing_and_parsing_a_select_gives_the_same_ast(
        fields in proptest::collection::vec(expr(), 1..3),
        measurement in ident(),
        condition in proptest::option::of(expr()),
        limit in 0u64..100,
        descending in any::<bool>(),
    ) {
        let statement = Statement::Select(Box::new(SelectStatement {
            fields: fields.into_iter().map(|expr| Field { expr, alias: None }).collect(),
            sources: vec![Source::Measurement { database: None, rp: None, name: MeasurementMatch::Name(measurement) }],
            condition,
            dimensions: vec![Dimension::Time { interval: 60_000_000_000, offset: None }, Dimension::Tag("host".into())],
            fill: None,
            descending,
            limit,
            offset: 0,
            slimit: 0,
            soffset: 0,
            timezone: None,
        }));
        let printed = statement.to_string();
        let parsed = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
        prop_assert_eq!(&parsed.statements[0], &statement, "{}", printed);
    }

    #[test]
    fn random_query_strings_never_panic(text in "\\PC{0,80}") {
        let _ = parse(&text);
    }

    #[test]
    fn mutated_queries_never_panic(at in 0usize..120, byte in any::<u8>(), cut in 0usize..120) {
        let mut text = b"SELECT mean(\"v\")::float, * FROM db.rp./m.*/ WHERE time > now() - 1h AND \"h\" =~ /a|b/ GROUP BY time(1m, -10s), * fill(-1.5) LIMIT 3; SHOW TAG VALUES WITH KEY IN (a, \"b\")".to_vec();
        let at = at % text.len();
        text[at] = byte;
        text.truncate(cut.max(1).min(text.len()));
        let _ = parse(&String::from_utf8_lossy(&text));
    }
}

#[test]
fn select_reads_back_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions::for_test(dir.path().to_path_buf())).expect("open");
    storage.create_database("db", None).expect("create");
    let body = "cpu,host=a v=1,s=\"x\" 10\ncpu,host=b v=2 20\ncpu,host=a v=3 30";
    let batch = lineproto::parse(body.as_bytes(), Precision::Nanosecond, 0);
    storage.write("db", None, &batch.points).expect("write");
    let context = QueryContext {
        database: Some("db".into()),
        retention_policy: None,
        now: 0,
        limits: QueryLimits::default(),
        cluster: None,
    };
    let run = |q: &str| {
        let query = parse(q).expect("parse");
        String::from_utf8(encode_json(
            &execute(&query, &context, &storage),
            Epoch::Units(1),
            false,
        ))
        .expect("utf8")
    };
    assert_eq!(
        run("SELECT * FROM cpu"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"cpu\",\"columns\":[\"time\",\"host\",\"s\",\"v\"],\"values\":[[10,\"a\",\"x\",1],[20,\"b\",null,2],[30,\"a\",null,3]]}]}]}\n"
    );
    assert_eq!(
        run("SELECT v FROM cpu WHERE host = 'a' AND time > 10 ORDER BY time DESC LIMIT 1"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"cpu\",\"columns\":[\"time\",\"v\"],\"values\":[[30,3]]}]}]}\n"
    );
    assert_eq!(
        run("SELECT v FROM cpu WHERE v >= 2 GROUP BY host"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"cpu\",\"tags\":{\"host\":\"a\"},\"columns\":[\"time\",\"v\"],\"values\":[[30,3]]},{\"name\":\"cpu\",\"tags\":{\"host\":\"b\"},\"columns\":[\"time\",\"v\"],\"values\":[[20,2]]}]}]}\n"
    );
    assert_eq!(
        run("SELECT * FROM nope; SHOW DATABASES"),
        "{\"results\":[{\"statement_id\":0},{\"statement_id\":1,\"series\":[{\"name\":\"databases\",\"columns\":[\"name\"],\"values\":[[\"db\"]]}]}]}\n"
    );
    assert_eq!(
        run("SELECT mean(v), max(v) FROM cpu WHERE time >= 0 AND time < 40 GROUP BY time(20ns) fill(none)"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"cpu\",\"columns\":[\"time\",\"mean\",\"max\"],\"values\":[[0,1,1],[20,2.5,3]]}]}]}\n"
    );
    let chunks = encode_json_chunks(
        &execute(
            &parse("SELECT v FROM cpu").expect("parse"),
            &context,
            &storage,
        ),
        Epoch::Units(1),
        false,
        2,
    );
    let text = String::from_utf8(chunks).expect("utf8");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text
        .lines()
        .next()
        .is_some_and(|l| l.contains("\"partial\":true")));
    let csv = encode_csv(
        &execute(
            &parse("SELECT v FROM cpu").expect("parse"),
            &context,
            &storage,
        ),
        Epoch::Rfc3339,
    );
    assert_eq!(
        String::from_utf8(csv).expect("utf8"),
        "name,tags,time,v\ncpu,,10,1\ncpu,,20,2\ncpu,,30,3\n"
    );
    let _ = StoredValue::Float(0.0);
}

#[test]
fn go_number_and_time_formats() {
    let mut out = String::new();
    encode::format_float(1e-7, &mut out);
    out.push(' ');
    encode::format_float(123456789012345678.0, &mut out);
    out.push(' ');
    encode::format_float(0.5, &mut out);
    assert_eq!(out, "1e-7 123456789012345680 0.5");
    assert_eq!(encode::format_time(1), "1970-01-01T00:00:00.000000001Z");
    assert_eq!(
        encode::format_time(1_704_067_200_000_000_000),
        "2024-01-01T00:00:00Z"
    );
}

/// The JSON answer (nanosecond epochs) of `q` on database `db`.
fn run_json(storage: &Storage, db: &str, q: &str, limits: QueryLimits) -> String {
    let context = QueryContext {
        database: Some(db.into()),
        retention_policy: None,
        now: 0,
        limits,
        cluster: None,
    };
    let query = parse(q).expect("parse");
    String::from_utf8(encode_json(
        &execute(&query, &context, storage),
        Epoch::Units(1),
        false,
    ))
    .expect("utf8")
}

#[test]
fn limits_cardinality_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions::for_test(dir.path().to_path_buf())).expect("open");
    storage.create_database("db", None).expect("create");
    let body = "cpu,host=a v=1 10\ncpu,host=b v=2 20\ncpu,host=c v=3 30\nmem,host=a u=1i 10";
    let batch = lineproto::parse(body.as_bytes(), Precision::Nanosecond, 0);
    storage.write("db", None, &batch.points).expect("write");
    let run = |q: &str, limits: QueryLimits| run_json(&storage, "db", q, limits);
    let series_limit = QueryLimits {
        max_series: 2,
        ..Default::default()
    };
    assert!(run("SELECT v FROM cpu", series_limit.clone())
        .contains("max-select-series limit exceeded: (3/2)"));
    assert!(run("SELECT v FROM cpu WHERE host = 'a'", series_limit).contains("[10,1]"));
    let point_limit = QueryLimits {
        max_points: 2,
        ..Default::default()
    };
    assert!(
        run("SELECT count(v) FROM cpu", point_limit).contains("max-select-point limit exceeded")
    );
    let past = QueryLimits {
        deadline: Some(std::time::Instant::now()),
        ..Default::default()
    };
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert!(run("SELECT v FROM cpu", past).contains("query-timeout limit exceeded"));
    assert!(run("SHOW SERIES CARDINALITY", QueryLimits::default())
        .contains("\"cardinality estimation\"],\"values\":[[4]]"));
    assert!(run(
        "SHOW SERIES EXACT CARDINALITY FROM cpu",
        QueryLimits::default()
    )
    .contains("\"name\":\"cpu\",\"columns\":[\"count\"],\"values\":[[3]]"));
    assert!(run("SHOW MEASUREMENT EXACT CARDINALITY", QueryLimits::default()).contains("[[2]]"));
    assert_eq!(
        run(
            "DELETE FROM cpu WHERE host = 'a' OR host = 'b'",
            QueryLimits::default()
        ),
        "{\"results\":[{\"statement_id\":0}]}\n"
    );
    assert!(
        run("SHOW SERIES", QueryLimits::default()).contains("[[\"cpu,host=c\"],[\"mem,host=a\"]]")
    );
    assert_eq!(
        run("DROP SERIES FROM mem", QueryLimits::default()),
        "{\"results\":[{\"statement_id\":0}]}\n"
    );
    assert!(run("SHOW MEASUREMENTS", QueryLimits::default()).contains("[[\"cpu\"]]"));
}

#[test]
fn limit_narrowing_keeps_rows_of_other_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions::for_test(dir.path().to_path_buf())).expect("open");
    storage.create_database("db", None).expect("create");
    let batch = lineproto::parse(
        b"m a=1 1\nm a=2 2\nm a=3 3\nm b=4 4",
        Precision::Nanosecond,
        0,
    );
    storage.write("db", None, &batch.points).expect("write");
    let context = QueryContext {
        database: Some("db".into()),
        retention_policy: None,
        now: 0,
        limits: QueryLimits::default(),
        cluster: None,
    };
    let run = |q: &str| {
        String::from_utf8(encode_json(
            &execute(&parse(q).expect("parse"), &context, &storage),
            Epoch::Units(1),
            false,
        ))
        .expect("utf8")
    };
    assert!(
        run("SELECT a, b FROM m ORDER BY time DESC LIMIT 1").contains("\"values\":[[4,null,4]]")
    );
    assert!(run("SELECT a, b FROM m LIMIT 1").contains("\"values\":[[1,1,null]]"));
    assert!(
        run("SELECT a, b FROM m ORDER BY time DESC LIMIT 2 OFFSET 1")
            .contains("\"values\":[[3,3,null],[2,2,null]]")
    );
}

#[test]
fn subqueries_read_the_inner_result() {
    let body = "cpu,host=a v=1 10\ncpu,host=a v=3 20\ncpu,host=b v=10 10\ncpu,host=b v=20 30";
    let (_dir, run) = loaded(body, 100, 1);
    // mean per host: a = 2, b = 15; the outer max picks b's.
    assert_eq!(
        run("SELECT max(mean) FROM (SELECT mean(v) FROM cpu GROUP BY host)"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"cpu\",\"columns\":[\"time\",\"max\"],\"values\":[[0,15]]}]}]}\n"
    );
    // The inner GROUP BY tags are tags of the outer query.
    assert_eq!(
        run("SELECT mean FROM (SELECT mean(v) FROM cpu GROUP BY host) WHERE host = 'a'"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"cpu\",\"columns\":[\"time\",\"mean\"],\"values\":[[0,2]]}]}]}\n"
    );
    // The outer time range reaches an inner query that has none.
    assert!(
        run("SELECT sum(v) FROM (SELECT v FROM cpu) WHERE time >= 15 AND time <= 30")
            .contains("[[15,23]]")
    );
}

// Expected answers in the transformation tests were recorded from a real
// InfluxDB 1.6.7 given the same points and queries.

#[test]
fn transformations_of_raw_fields_merge_the_series_of_a_group() {
    let s = 1_000_000_000i64;
    let body = format!(
        "c,host=a n=1i {}\nc,host=a n=3i {}\nc,host=b n=10i {}\nc,host=b n=40i {}",
        s,
        2 * s,
        s,
        3 * s
    );
    let (_dir, run) = loaded(&body, 0, s);
    let one = |columns: &str, values: &str| {
        format!("{{\"results\":[{{\"statement_id\":0,\"series\":[{{\"name\":\"c\",\"columns\":[\"time\",\"{columns}\"],\"values\":{values}}}]}}]}}\n")
    };
    // Without GROUP BY the series are one stream: a's 1 and b's 10 share a
    // time, and the first of them counts (a's), so 3 -> 40 is 37 a second.
    assert_eq!(
        run("SELECT derivative(n, 1s) FROM c"),
        one("derivative", "[[2,2],[3,37]]")
    );
    assert_eq!(
        run("SELECT difference(n) FROM c"),
        one("difference", "[[2,2],[3,37]]")
    );
    assert_eq!(
        run("SELECT cumulative_sum(n) FROM c WHERE host = 'b'"),
        one("cumulative_sum", "[[1,10],[3,50]]")
    );
    // Descending, the stream runs backwards; at time 1 InfluxDB's merge
    // heap gives b's point first: (10 - 3) / 1s.
    assert_eq!(
        run("SELECT derivative(n) FROM c ORDER BY time DESC"),
        one("derivative", "[[2,-37],[1,7]]")
    );
    assert_eq!(
        run("SELECT derivative(n) FROM c ORDER BY time DESC LIMIT 1"),
        one("derivative", "[[2,-37]]")
    );
    // Per series with GROUP BY.
    assert_eq!(
        run("SELECT derivative(n), difference(n) FROM c GROUP BY host"),
        "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"c\",\"tags\":{\"host\":\"a\"},\"columns\":[\"time\",\"derivative\",\"difference\"],\"values\":[[2,2,2]]},{\"name\":\"c\",\"tags\":{\"host\":\"b\"},\"columns\":[\"time\",\"derivative\",\"difference\"],\"values\":[[3,15,30]]}]}]}\n"
    );
}

/// A database `db` holding `body` (nanosecond line protocol) and a function
/// that runs a query on it and gives the JSON answer with epoch `unit`.
fn loaded(body: &str, now: i64, unit: i64) -> (tempfile::TempDir, impl Fn(&str) -> String) {
    loaded_with(body, Precision::Nanosecond, now, Epoch::Units(unit))
}

fn loaded_with(
    body: &str,
    precision: Precision,
    now: i64,
    epoch: Epoch,
) -> (tempfile::TempDir, impl Fn(&str) -> String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions::for_test(dir.path().to_path_buf())).expect("open");
    storage.create_database("db", None).expect("create");
    let batch = lineproto::parse(body.as_bytes(), precision, 0);
    storage.write("db", None, &batch.points).expect("write");
    let context = QueryContext {
        database: Some("db".into()),
        retention_policy: None,
        now,
        limits: QueryLimits::default(),
        cluster: None,
    };
    let run = move |q: &str| {
        String::from_utf8(encode_json(
            &execute(&parse(q).expect("parse"), &context, &storage),
            epoch,
            false,
        ))
        .expect("utf8")
    };
    (dir, run)
}

/// Several transformations in one query: each is computed on its own and
/// the results are joined by time. The points are tests/transforms/data.lp;
/// every expected answer was recorded from a real InfluxDB 1.6.7 (the HTTP
/// test tests/transforms.rs replays many more).
#[test]
fn several_transformations_join_by_time_as_influxdb_does() {
    let body = include_str!("../../tests/transforms/data.lp");
    // 2024-01-01T01:00:00Z
    let (_dir, run) = loaded_with(
        body,
        Precision::Second,
        1_704_070_800_000_000_000,
        Epoch::Rfc3339,
    );
    let cases: &[(&str, &str)] = &[
        (
            "SELECT derivative(a), difference(b) FROM m",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","derivative","difference"],"values":[["2024-01-01T00:00:05Z",0.3,-3],["2024-01-01T00:00:10Z",0.1,8],["2024-01-01T00:00:15Z",17.4,-10],["2024-01-01T00:00:20Z",null,7],["2024-01-01T00:00:25Z",null,-3],["2024-01-01T00:00:30Z",-5.466666666666667,11],["2024-01-01T00:00:40Z",-0.2,null],["2024-01-01T00:00:45Z",14.8,-18],["2024-01-01T00:01:00Z",-4.666666666666667,28],["2024-01-01T00:01:10Z",-0.6,-27]]}]}]}"#,
        ),
        (
            "SELECT derivative(a), difference(b) FROM m LIMIT 2 OFFSET 3",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","derivative","difference"],"values":[["2024-01-01T00:00:20Z",null,7],["2024-01-01T00:00:25Z",null,-3],["2024-01-01T00:00:30Z",-5.466666666666667,null],["2024-01-01T00:00:40Z",-0.2,null]]}]}]}"#,
        ),
        (
            "SELECT derivative(a), difference(b) FROM m ORDER BY time DESC LIMIT 3",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","derivative","difference"],"values":[["2024-01-01T00:01:00Z",0.6,27],["2024-01-01T00:00:45Z",4.666666666666667,-28],["2024-01-01T00:00:40Z",-14.8,null],["2024-01-01T00:00:30Z",null,18]]}]}]}"#,
        ),
        (
            "SELECT derivative(a), difference(b) FROM m WHERE time >= '2024-01-01T00:00:20Z' GROUP BY host fill(previous)",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"host":"a"},"columns":["time","derivative","difference"],"values":[["2024-01-01T00:00:30Z",null,8],["2024-01-01T00:00:40Z",-0.2,8],["2024-01-01T00:01:00Z",0.2,10]]},{"name":"m","tags":{"host":"b"},"columns":["time","derivative","difference"],"values":[["2024-01-01T00:00:45Z",-1,null]]},{"name":"m","tags":{"host":"c"},"columns":["time","derivative","difference"],"values":[["2024-01-01T00:01:10Z",null,-6]]}]}]}"#,
        ),
        (
            "SELECT cumulative_sum(a), derivative(a) FROM m",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","cumulative_sum","derivative"],"values":[["2024-01-01T00:00:00Z",1,null],["2024-01-01T00:00:00Z",101,null],["2024-01-01T00:00:05Z",103.5,0.3],["2024-01-01T00:00:10Z",106.5,0.1],["2024-01-01T00:00:10Z",109,null],["2024-01-01T00:00:15Z",199,17.4],["2024-01-01T00:00:30Z",207,-5.466666666666667],["2024-01-01T00:00:30Z",302,null],["2024-01-01T00:00:40Z",308,-0.2],["2024-01-01T00:00:45Z",388,14.8],["2024-01-01T00:01:00Z",398,-4.666666666666667],["2024-01-01T00:01:10Z",402,-0.6]]}]}]}"#,
        ),
        (
            "SELECT moving_average(a, 2), elapsed(a, 1s) FROM m GROUP BY host",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"host":"a"},"columns":["time","moving_average","elapsed"],"values":[["2024-01-01T00:00:10Z",2,10],["2024-01-01T00:00:30Z",5.5,20],["2024-01-01T00:00:40Z",7,10],["2024-01-01T00:01:00Z",8,20]]},{"name":"m","tags":{"host":"b"},"columns":["time","moving_average","elapsed"],"values":[["2024-01-01T00:00:15Z",95,15],["2024-01-01T00:00:30Z",92.5,15],["2024-01-01T00:00:45Z",87.5,15]]},{"name":"m","tags":{"host":"c"},"columns":["time","moving_average","elapsed"],"values":[["2024-01-01T00:00:10Z",2.5,5],["2024-01-01T00:01:10Z",3.25,60]]}]}]}"#,
        ),
        (
            "SELECT derivative(a) + difference(b) FROM m WHERE host='a'",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","derivative_difference"],"values":[["2024-01-01T00:00:10Z",5.2],["2024-01-01T00:00:20Z",null],["2024-01-01T00:00:30Z",8.25],["2024-01-01T00:00:40Z",null],["2024-01-01T00:01:00Z",10.2]]}]}]}"#,
        ),
        (
            "SELECT derivative(mean(a), 1s), cumulative_sum(max(b)) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s) fill(0)",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","derivative","cumulative_sum"],"values":[["2024-01-01T00:00:00Z",3.45,10],["2024-01-01T00:00:10Z",-0.2666666666666668,25],["2024-01-01T00:00:20Z",-3.183333333333333,37],["2024-01-01T00:00:30Z",5.15,57],["2024-01-01T00:00:40Z",-0.85,59],["2024-01-01T00:00:50Z",-4.3,59],["2024-01-01T00:01:00Z",1,89],["2024-01-01T00:01:10Z",-0.6,92],["2024-01-01T00:01:20Z",-0.4,92]]}]}]}"#,
        ),
        (
            "SELECT derivative(mean(a), 1s), cumulative_sum(max(b)) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s) fill(linear)",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","derivative","cumulative_sum"],"values":[["2024-01-01T00:00:00Z",null,10],["2024-01-01T00:00:10Z",-0.2666666666666668,25],["2024-01-01T00:00:20Z",0.9833333333333332,37],["2024-01-01T00:00:30Z",0.9833333333333336,57],["2024-01-01T00:00:40Z",-0.85,59],["2024-01-01T00:00:50Z",-1.65,75],["2024-01-01T00:01:00Z",-1.65,105],["2024-01-01T00:01:10Z",-0.6,108]]}]}]}"#,
        ),
        (
            "SELECT non_negative_difference(max(b)), difference(max(b)), non_negative_derivative(mean(a)) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s) fill(previous)",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","non_negative_difference","difference","non_negative_derivative"],"values":[["2024-01-01T00:00:10Z",5,5,null],["2024-01-01T00:00:20Z",5,-3,0],["2024-01-01T00:00:30Z",8,8,19.666666666666668],["2024-01-01T00:00:40Z",8,-18,19.666666666666668],["2024-01-01T00:00:50Z",0,0,0],["2024-01-01T00:01:00Z",28,28,0],["2024-01-01T00:01:10Z",28,-27,0],["2024-01-01T00:01:20Z",0,0,0]]}]}]}"#,
        ),
        (
            "SELECT mean(a), derivative(mean(a)) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s) LIMIT 2 OFFSET 1",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","mean","derivative"],"values":[["2024-01-01T00:00:10Z",31.833333333333332,null],["2024-01-01T00:00:20Z",null,null],["2024-01-01T00:00:30Z",null,9.833333333333334],["2024-01-01T00:00:40Z",null,-8.5]]}]}]}"#,
        ),
        (
            "SELECT non_negative_derivative(max(a)), difference(sum(b)) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s) ORDER BY time DESC",
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","non_negative_derivative","difference"],"values":[["2024-01-01T00:01:00Z",6,27],["2024-01-01T00:00:40Z",35,-28],["2024-01-01T00:00:30Z",15,18],["2024-01-01T00:00:20Z",null,1],["2024-01-01T00:00:10Z",null,6],["2024-01-01T00:00:00Z",10,-9]]}]}]}"#,
        ),
        (
            "SELECT derivative(mean(a)) FROM m WHERE time < '2024-01-01T00:01:00Z' GROUP BY time(10s)",
            r#"{"results":[{"statement_id":0}]}"#,
        ),
        (
            "SELECT a, derivative(a) FROM m",
            r#"{"results":[{"statement_id":0,"error":"mixing aggregate and non-aggregate queries is not supported"}]}"#,
        ),
        (
            "SELECT derivative(a) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s)",
            r#"{"results":[{"statement_id":0,"error":"aggregate function required inside the call to derivative"}]}"#,
        ),
        (
            "SELECT derivative(mean(a)) FROM m",
            r#"{"results":[{"statement_id":0,"error":"derivative aggregate requires a GROUP BY interval"}]}"#,
        ),
        (
            "SELECT derivative(a, 2) FROM m",
            r#"{"results":[{"statement_id":0,"error":"second argument to derivative must be a duration, got *influxql.IntegerLiteral"}]}"#,
        ),
        (
            "SELECT derivative(a, 0s) FROM m",
            r#"{"results":[{"statement_id":0,"error":"duration argument must be positive, got 0s"}]}"#,
        ),
        (
            "SELECT moving_average(a) FROM m",
            r#"{"results":[{"statement_id":0,"error":"invalid number of arguments for moving_average, expected 2, got 1"}]}"#,
        ),
        (
            "SELECT moving_average(a, 1) FROM m WHERE host='a'",
            r#"{"results":[{"statement_id":0,"error":"moving_average window must be greater than 1, got 1"}]}"#,
        ),
        (
            "SELECT derivative(abs(mean(a))) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s)",
            r#"{"results":[{"statement_id":0,"error":"unsupported call: abs"}]}"#,
        ),
        (
            "SELECT derivative(mean(a)), top(b, 2) FROM m WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:01:30Z' GROUP BY time(10s)",
            r#"{"results":[{"statement_id":0,"error":"selector function top() cannot be combined with other functions"}]}"#,
        ),
        (
            "SELECT derivative(str) FROM s",
            r#"{"results":[{"statement_id":0,"error":"unsupported derivative iterator type: *query.stringInterruptIterator"}]}"#,
        ),
        (
            "SELECT cumulative_sum(str), derivative(n) FROM s",
            r#"{"results":[{"statement_id":0,"error":"unsupported cumulative sum iterator type: *query.stringInterruptIterator"}]}"#,
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(run(query), format!("{expected}\n"), "{query}");
    }
}

#[test]
fn sample_keeps_n_points_in_time_order() {
    let body: String = (1..=20).map(|i| format!("m v={i} {i}\n")).collect();
    let (_dir, run) = loaded(&body, 0, 1);
    for _ in 0..20 {
        let answer: serde_json::Value =
            serde_json::from_str(&run("SELECT sample(v, 3) FROM m")).expect("json");
        let values = answer["results"][0]["series"][0]["values"]
            .as_array()
            .expect("values")
            .clone();
        assert_eq!(values.len(), 3, "{answer}");
        let times: Vec<i64> = values.iter().filter_map(|row| row[0].as_i64()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        // A sampled point is a real point: its value is its time.
        assert!(values.iter().all(|row| row[0].as_f64() == row[1].as_f64()));
    }
    // More than there are: every point once.
    assert!(run("SELECT sample(v, 50) FROM m WHERE time <= 3")
        .contains("\"values\":[[1,1],[2,2],[3,3]]"));
    // Per window of GROUP BY time.
    let grouped: serde_json::Value = serde_json::from_str(&run(
        "SELECT sample(v, 1) FROM m WHERE time >= 1 AND time <= 20 GROUP BY time(10ns)",
    ))
    .expect("json");
    assert_eq!(
        grouped["results"][0]["series"][0]["values"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert!(
        run("SELECT sample(v, 0) FROM m").contains("sample window must be greater than 1, got 0")
    );
}

/// Answers recorded from InfluxDB 1.6.7 on the same four points.
#[test]
fn cardinalities_tag_and_field_key_pages_casts_and_variables_as_influxdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(StorageOptions::for_test(dir.path().to_path_buf())).expect("open");
    storage.create_database("t", None).expect("create");
    let body = "cpu,host=a,region=x v=1.5,n=3i 10\ncpu,host=b v=2.7,n=3i 20\ncpu,host=c,region=y v=3.2,s=\"z\" 30\nmem,host=a u=1i 10";
    let batch = lineproto::parse(body.as_bytes(), Precision::Nanosecond, 0);
    storage.write("t", None, &batch.points).expect("write");
    let run = |q: &str| {
        run_json(&storage, "t", q, QueryLimits::default())
            .trim_end()
            .to_string()
    };
    let cases = [
        (
            "SHOW TAG VALUES CARDINALITY WITH KEY = \"host\"",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["count"],"values":[[3]]},{"name":"mem","columns":["count"],"values":[[1]]}]}]}"#,
        ),
        (
            "SHOW TAG VALUES EXACT CARDINALITY FROM cpu WITH KEY IN (\"host\", \"region\")",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["count"],"values":[[5]]}]}]}"#,
        ),
        (
            "SHOW FIELD KEY CARDINALITY",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["count"],"values":[[3]]},{"name":"mem","columns":["count"],"values":[[1]]}]}]}"#,
        ),
        (
            "SHOW TAG KEY EXACT CARDINALITY WHERE host = 'b'",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["count"],"values":[[1]]}]}]}"#,
        ),
        (
            "SHOW TAG KEYS FROM cpu WHERE host = 'b'",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["tagKey"],"values":[["host"]]}]}]}"#,
        ),
        (
            "SHOW TAG KEYS LIMIT 1 OFFSET 1",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["tagKey"],"values":[["region"]]}]}]}"#,
        ),
        (
            "SHOW FIELD KEYS FROM cpu LIMIT 1 OFFSET 1",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["fieldKey","fieldType"],"values":[["s","string"]]}]}]}"#,
        ),
        (
            "SELECT v::integer, n::float FROM cpu",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","v","n"],"values":[[10,1,3],[20,2,3],[30,3,null]]}]}]}"#,
        ),
        (
            "SELECT v::string FROM cpu",
            r#"{"results":[{"statement_id":0}]}"#,
        ),
        (
            "SELECT v, 2 FROM cpu",
            r#"{"results":[{"statement_id":0,"error":"field must contain at least one variable"}]}"#,
        ),
        (
            "SELECT percentile(n, 50) FROM cpu",
            r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","percentile"],"values":[[10,3]]}]}]}"#,
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(run(query), expected, "{query}");
    }
}
