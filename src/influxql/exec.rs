//! Planning and execution of statements against the storage engine.
//!
//! A SELECT is planned into: the database and retention policy, the
//! measurements, a time range (from the `time` conditions of the top-level
//! AND chain), a per-series tag filter, a per-row residual filter, and the
//! output columns. Execution reads only the fields it needs, one series at a
//! time, and merges the rows of a group by time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use regex::Regex;

use super::ast::*;
use super::lexer::format_go_duration;
use super::zone::Zone;
use super::{Cell, QueryContext, ResultSeries, StatementResult};
use crate::lineproto::{MAX_NANO_TIME, MIN_NANO_TIME};
use crate::storage::{
    FieldType, RetentionPolicySpec, RetentionPolicyUpdate, SeriesInfo, Storage, StorageError, Value,
};

type Result<T> = std::result::Result<T, String>;

fn storage_error(error: StorageError) -> String {
    match error {
        StorageError::DatabaseNotFound(name) => format!("database not found: {name}"),
        StorageError::RetentionPolicyNotFound(name) => {
            format!("retention policy not found: {name}")
        }
        other => other.to_string(),
    }
}

fn nanos(duration: i64) -> Duration {
    Duration::from_nanos(u64::try_from(duration).unwrap_or(0))
}

fn database<'a>(explicit: &'a Option<String>, context: &'a QueryContext) -> Result<&'a str> {
    explicit
        .as_deref()
        .or(context.database.as_deref())
        .ok_or_else(|| "database name required".to_string())
}

fn require_database(storage: &Storage, name: &str) -> Result<()> {
    if storage.database_exists(name) {
        Ok(())
    } else {
        Err(format!("database not found: {name}"))
    }
}

fn empty() -> StatementResult {
    StatementResult::default()
}

/// Rows per chunk of InfluxDB 1.x's query emitter when the request is not
/// chunked.
const EMITTER_CHUNK: usize = 10_000;

/// InfluxDB 1.6.7 marks a series of a SELECT (or SHOW SERIES, which it runs
/// as one) `"partial":true` when it has more than 10,000 rows, even when
/// the response is not chunked: its emitter cuts the series at 10,000 rows
/// and the HTTP handler appends the later chunks' rows to the first chunk's
/// series, whose flag stays set. Clients see it, so we give the same.
fn mark_long_series(mut result: StatementResult) -> StatementResult {
    for series in &mut result.series {
        series.partial = series.values.len() > EMITTER_CHUNK;
    }
    result
}

fn with_series(series: Vec<ResultSeries>) -> StatementResult {
    StatementResult {
        series,
        ..Default::default()
    }
}

pub fn execute_statement(
    statement: &Statement,
    context: &QueryContext,
    storage: &Storage,
) -> Result<StatementResult> {
    match statement {
        Statement::Select(select) => execute_select(select, context, storage).map(mark_long_series),
        Statement::CreateDatabase { name, rp } => {
            let spec = rp.as_ref().map(|rp| RetentionPolicySpec {
                name: rp
                    .name
                    .clone()
                    .unwrap_or_else(|| crate::storage::DEFAULT_RP_NAME.to_string()),
                duration: rp.duration.map(nanos),
                shard_group_duration: rp.shard_duration.map(nanos),
                replication: rp.replication,
            });
            storage.create_database(name, spec).map_err(storage_error)?;
            Ok(empty())
        }
        Statement::DropDatabase { name } => {
            storage.drop_database(name).map_err(storage_error)?;
            Ok(empty())
        }
        Statement::ShowDatabases => {
            let values = storage
                .database_names()
                .into_iter()
                .map(|name| vec![Cell::String(name)])
                .collect();
            Ok(with_series(vec![ResultSeries {
                name: Some("databases".into()),
                columns: vec!["name".into()],
                values,
                ..Default::default()
            }]))
        }
        // As InfluxDB 1.6.7 with no user: the columns, no rows.
        Statement::ShowUsers => Ok(with_series(vec![ResultSeries {
            columns: vec!["user".into(), "admin".into()],
            ..Default::default()
        }])),
        Statement::CreateRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        } => {
            let spec = RetentionPolicySpec {
                name: name.clone(),
                duration: Some(nanos(*duration)),
                shard_group_duration: shard_duration.map(nanos),
                replication: Some(*replication),
            };
            storage
                .create_retention_policy(database, spec, *default)
                .map_err(storage_error)?;
            Ok(empty())
        }
        Statement::AlterRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        } => {
            let update = RetentionPolicyUpdate {
                duration: duration.map(nanos),
                shard_group_duration: shard_duration.map(nanos),
                replication: *replication,
                make_default: *default,
            };
            storage
                .alter_retention_policy(database, name, update)
                .map_err(storage_error)?;
            Ok(empty())
        }
        Statement::DropRetentionPolicy { name, database } => {
            storage
                .drop_retention_policy(database, name)
                .map_err(storage_error)?;
            Ok(empty())
        }
        Statement::ShowRetentionPolicies { database: explicit } => {
            let db = database(explicit, context)?;
            let policies = storage.retention_policies(db).map_err(storage_error)?;
            let values = policies
                .into_iter()
                .map(|rp| {
                    vec![
                        Cell::String(rp.name),
                        Cell::String(format_go_duration(rp.duration.as_nanos() as i64)),
                        Cell::String(format_go_duration(rp.shard_group_duration.as_nanos() as i64)),
                        Cell::Integer(i64::from(rp.replication)),
                        Cell::Boolean(rp.default),
                    ]
                })
                .collect();
            Ok(with_series(vec![ResultSeries {
                name: None,
                columns: [
                    "name",
                    "duration",
                    "shardGroupDuration",
                    "replicaN",
                    "default",
                ]
                .map(String::from)
                .to_vec(),
                values,
                ..Default::default()
            }]))
        }
        Statement::ShowMeasurements {
            database: explicit,
            source,
            condition,
            limit,
            offset,
        } => {
            let db = database(explicit, context)?;
            if !storage.database_exists(db) {
                return Ok(empty());
            }
            let mut names = storage.measurements(db).map_err(storage_error)?;
            if let Some(source) = source {
                let matcher = MeasurementMatcher::new(source)?;
                names.retain(|name| matcher.matches(name));
            }
            if let Some(condition) = condition {
                let mut kept = Vec::new();
                for name in names {
                    let series = storage.series(db, &name).map_err(storage_error)?;
                    if series.iter().any(|s| tag_filter(condition, &s.tags)) {
                        kept.push(name);
                    }
                }
                names = kept;
            }
            let values: Vec<Vec<Cell>> = paginate(names, *limit, *offset)
                .into_iter()
                .map(|name| vec![Cell::String(name)])
                .collect();
            if values.is_empty() {
                return Ok(empty());
            }
            Ok(with_series(vec![ResultSeries {
                name: Some("measurements".into()),
                columns: vec!["name".into()],
                values,
                ..Default::default()
            }]))
        }
        Statement::ShowFieldKeys {
            database: explicit,
            sources,
            limit,
            offset,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut out = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                let fields = storage
                    .field_types(db, &measurement)
                    .map_err(storage_error)?;
                let fields = paginate(fields, *limit, *offset);
                if fields.is_empty() {
                    continue;
                }
                out.push(ResultSeries {
                    name: Some(measurement),
                    columns: vec!["fieldKey".into(), "fieldType".into()],
                    values: fields
                        .into_iter()
                        .map(|(name, field_type)| {
                            vec![Cell::String(name), Cell::String(field_type.name().into())]
                        })
                        .collect(),
                    ..Default::default()
                });
            }
            Ok(with_series(out))
        }
        Statement::ShowTagKeys {
            database: explicit,
            sources,
            condition,
            limit,
            offset,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut out = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                let keys = tag_keys_where(storage, db, &measurement, condition.as_ref())?;
                let keys = paginate(keys, *limit, *offset);
                if keys.is_empty() {
                    continue;
                }
                out.push(ResultSeries {
                    name: Some(measurement),
                    columns: vec!["tagKey".into()],
                    values: keys
                        .into_iter()
                        .map(|key| vec![Cell::String(key)])
                        .collect(),
                    ..Default::default()
                });
            }
            Ok(with_series(out))
        }
        Statement::ShowTagValues {
            database: explicit,
            sources,
            keys,
            condition,
            limit,
            offset,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut out = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                let pairs = tag_pairs(storage, db, &measurement, keys, condition.as_ref())?;
                let pairs = paginate(pairs, *limit, *offset);
                if pairs.is_empty() {
                    continue;
                }
                out.push(ResultSeries {
                    name: Some(measurement),
                    columns: vec!["key".into(), "value".into()],
                    values: pairs
                        .into_iter()
                        .map(|(key, value)| vec![Cell::String(key), Cell::String(value)])
                        .collect(),
                    ..Default::default()
                });
            }
            Ok(with_series(out))
        }
        Statement::ShowSeries {
            database: explicit,
            sources,
            condition,
            limit,
            offset,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut keys = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                for series in storage.series(db, &measurement).map_err(storage_error)? {
                    if condition
                        .as_ref()
                        .is_none_or(|condition| tag_filter(condition, &series.tags))
                    {
                        keys.push(series.key);
                    }
                }
            }
            keys.sort();
            let keys = paginate(keys, *limit, *offset);
            if keys.is_empty() {
                return Ok(empty());
            }
            Ok(mark_long_series(with_series(vec![ResultSeries {
                columns: vec!["key".into()],
                values: keys
                    .into_iter()
                    .map(|key| vec![Cell::String(key)])
                    .collect(),
                ..Default::default()
            }])))
        }
        Statement::Delete { source, condition } => {
            let sources: Vec<Source> = source
                .iter()
                .map(|name| Source::Measurement {
                    database: None,
                    rp: None,
                    name: name.clone(),
                })
                .collect();
            delete(storage, context, &sources, condition.as_ref(), true)
        }
        Statement::ShowSeriesCardinality {
            database: explicit,
            exact,
            sources,
            condition,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut per_measurement = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                let count = storage
                    .series(db, &measurement)
                    .map_err(storage_error)?
                    .iter()
                    .filter(|series| {
                        condition
                            .as_ref()
                            .is_none_or(|c| tag_filter(c, &series.tags))
                    })
                    .count();
                if count > 0 {
                    per_measurement.push((measurement, count as i64));
                }
            }
            // The series index is exact, so the "estimation" is exact too.
            if *exact || !sources.is_empty() || condition.is_some() {
                Ok(with_series(
                    per_measurement
                        .into_iter()
                        .map(|(name, count)| ResultSeries {
                            name: Some(name),
                            columns: vec!["count".into()],
                            values: vec![vec![Cell::Integer(count)]],
                            ..Default::default()
                        })
                        .collect(),
                ))
            } else {
                let total: i64 = per_measurement.iter().map(|(_, count)| count).sum();
                Ok(with_series(vec![ResultSeries {
                    columns: vec!["cardinality estimation".into()],
                    values: vec![vec![Cell::Integer(total)]],
                    ..Default::default()
                }]))
            }
        }
        Statement::ShowTagValuesCardinality {
            database: explicit,
            sources,
            keys,
            condition,
            exact: _,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut counts = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                let pairs = tag_pairs(storage, db, &measurement, keys, condition.as_ref())?;
                counts.push((measurement, pairs.len()));
            }
            Ok(counts_per_measurement(counts))
        }
        Statement::ShowFieldKeyCardinality {
            database: explicit,
            sources,
            condition,
            exact: _,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut counts = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                if let Some(condition) = condition {
                    let matching = storage
                        .series(db, &measurement)
                        .map_err(storage_error)?
                        .iter()
                        .any(|series| tag_filter(condition, &series.tags));
                    if !matching {
                        continue;
                    }
                }
                let fields = storage
                    .field_types(db, &measurement)
                    .map_err(storage_error)?;
                counts.push((measurement, fields.len()));
            }
            Ok(counts_per_measurement(counts))
        }
        Statement::ShowTagKeyCardinality {
            database: explicit,
            sources,
            condition,
            exact: _,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let mut counts = Vec::new();
            for measurement in measurements_of(storage, db, sources)? {
                let keys = tag_keys_where(storage, db, &measurement, condition.as_ref())?;
                counts.push((measurement, keys.len()));
            }
            Ok(counts_per_measurement(counts))
        }
        Statement::ShowMeasurementCardinality {
            database: explicit,
            exact,
        } => {
            let db = database(explicit, context)?;
            require_database(storage, db)?;
            let count = storage.measurements(db).map_err(storage_error)?.len() as i64;
            let column = if *exact {
                "count"
            } else {
                "cardinality estimation"
            };
            Ok(with_series(vec![ResultSeries {
                columns: vec![column.into()],
                values: vec![vec![Cell::Integer(count)]],
                ..Default::default()
            }]))
        }
        Statement::DropSeries { sources, condition } => {
            delete(storage, context, sources, condition.as_ref(), false)
        }
        Statement::DropMeasurement { name } => {
            let db = database(&None, context)?;
            require_database(storage, db)?;
            storage.drop_measurement(db, name).map_err(storage_error)?;
            Ok(empty())
        }
    }
}

/// DELETE (points in a time range) and DROP SERIES (whole series), by tags.
fn delete(
    storage: &Storage,
    context: &QueryContext,
    sources: &[Source],
    condition: Option<&Expr>,
    time_allowed: bool,
) -> Result<StatementResult> {
    let db = database(&None, context)?;
    require_database(storage, db)?;
    let plan = plan_condition(condition, context.now, None)?;
    let has_time = condition.is_some_and(mentions_time);
    if has_time && !time_allowed {
        return Err("DROP SERIES doesn't support time in WHERE clause".into());
    }
    if plan.nothing {
        return Err("OR with time conditions is not supported in DELETE".into());
    }
    if let Some(residual) = &plan.residual {
        let mut refs = Vec::new();
        var_refs(residual, &mut refs);
        for measurement in measurements_of(storage, db, sources)? {
            let fields = storage
                .field_types(db, &measurement)
                .map_err(storage_error)?;
            if refs
                .iter()
                .any(|(name, _)| fields.iter().any(|(field, _)| field == name))
            {
                return Err("fields not supported in WHERE clause during deletion".into());
            }
        }
    }
    for measurement in measurements_of(storage, db, sources)? {
        let ids: Vec<u64> = storage
            .series(db, &measurement)
            .map_err(storage_error)?
            .into_iter()
            .filter(|series| {
                plan.residual
                    .as_ref()
                    .is_none_or(|residual| tag_filter(residual, &series.tags))
            })
            .map(|series| series.id)
            .collect();
        if !ids.is_empty() {
            storage
                .delete_points(db, &ids, plan.min_time, plan.max_time)
                .map_err(storage_error)?;
        }
    }
    Ok(empty())
}

/// Whether a tag key is one that `WITH KEY …` names.
fn tag_key_matches(keys: &TagKeyMatch, key: &str) -> Result<bool> {
    Ok(match keys {
        TagKeyMatch::Eq(k) => key == k,
        TagKeyMatch::Neq(k) => key != k,
        TagKeyMatch::In(ks) => ks.iter().any(|k| k == key),
        TagKeyMatch::Regex(r) => compile(r)?.is_match(key),
        TagKeyMatch::NotRegex(r) => !compile(r)?.is_match(key),
    })
}

/// The (key, value) pairs of a measurement's tags whose key `keys` names,
/// sorted; with a condition, of the series that match it.
fn tag_pairs(
    storage: &Storage,
    db: &str,
    measurement: &str,
    keys: &TagKeyMatch,
    condition: Option<&Expr>,
) -> Result<Vec<(String, String)>> {
    let Some(condition) = condition else {
        // Straight from the inverted index, where keys and the values of
        // each key are sorted already.
        let mut pairs = Vec::new();
        for key in storage.tag_keys(db, measurement).map_err(storage_error)? {
            if tag_key_matches(keys, &key)? {
                for value in storage
                    .tag_values(db, measurement, &key)
                    .map_err(storage_error)?
                {
                    pairs.push((key.clone(), value));
                }
            }
        }
        return Ok(pairs);
    };
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    for series in storage.series(db, measurement).map_err(storage_error)? {
        if !tag_filter(condition, &series.tags) {
            continue;
        }
        for (key, value) in series.tags {
            if tag_key_matches(keys, &key)? {
                pairs.insert((key, value));
            }
        }
    }
    Ok(pairs.into_iter().collect())
}

/// The tag keys of a measurement (sorted), or with a condition those of
/// its series that match it.
fn tag_keys_where(
    storage: &Storage,
    db: &str,
    measurement: &str,
    condition: Option<&Expr>,
) -> Result<Vec<String>> {
    let Some(condition) = condition else {
        return storage.tag_keys(db, measurement).map_err(storage_error);
    };
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for series in storage.series(db, measurement).map_err(storage_error)? {
        if tag_filter(condition, &series.tags) {
            keys.extend(series.tags.into_iter().map(|(key, _)| key));
        }
    }
    Ok(keys.into_iter().collect())
}

/// One `count` series per measurement with a non-zero count (the
/// `SHOW … CARDINALITY` statements).
fn counts_per_measurement(counts: Vec<(String, usize)>) -> StatementResult {
    with_series(
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| ResultSeries {
                name: Some(name),
                columns: vec!["count".into()],
                values: vec![vec![Cell::Integer(count as i64)]],
                ..Default::default()
            })
            .collect(),
    )
}

fn paginate<T>(items: Vec<T>, limit: u64, offset: u64) -> Vec<T> {
    let skipped = items
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX));
    if limit == 0 {
        skipped.collect()
    } else {
        skipped
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect()
    }
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|error| format!("error parsing regexp: {error}"))
}

enum MeasurementMatcher {
    Name(String),
    Regex(Regex),
}

impl MeasurementMatcher {
    fn new(source: &MeasurementMatch) -> Result<Self> {
        Ok(match source {
            MeasurementMatch::Name(name) => MeasurementMatcher::Name(name.clone()),
            MeasurementMatch::Regex(regex) => MeasurementMatcher::Regex(compile(regex)?),
        })
    }
    fn matches(&self, name: &str) -> bool {
        match self {
            MeasurementMatcher::Name(wanted) => wanted == name,
            MeasurementMatcher::Regex(regex) => regex.is_match(name),
        }
    }
}

/// The measurements named by FROM (all of them when there is no FROM).
fn measurements_of(storage: &Storage, db: &str, sources: &[Source]) -> Result<Vec<String>> {
    let all = storage.measurements(db).map_err(storage_error)?;
    if sources.is_empty() {
        return Ok(all);
    }
    let mut out = BTreeSet::new();
    for source in sources {
        match source {
            Source::Measurement { name, .. } => {
                let matcher = MeasurementMatcher::new(name)?;
                out.extend(all.iter().filter(|m| matcher.matches(m)).cloned());
            }
            Source::Subquery(_) => {
                return Err("subqueries are not supported in SHOW statements".into())
            }
        }
    }
    Ok(out.into_iter().collect())
}

// ---------------------------------------------------------------- conditions

/// A value during condition evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Number(f64),
    Integer(i64),
    Str(String),
    Bool(bool),
}

impl Val {
    fn of(value: &Value) -> Val {
        match value {
            Value::Float(v) => Val::Number(*v),
            Value::Integer(v) => Val::Integer(*v),
            Value::Unsigned(v) => Val::Number(*v as f64),
            Value::String(v) => Val::Str(v.clone()),
            Value::Boolean(v) => Val::Bool(*v),
        }
    }
    fn number(&self) -> Option<f64> {
        match self {
            Val::Number(v) => Some(*v),
            Val::Integer(v) => Some(*v as f64),
            _ => None,
        }
    }
}

/// What a condition can see: tags of the series and (per row) field values.
trait Scope {
    fn lookup(&self, name: &str, data_type: Option<DataType>) -> Option<Val>;
}

struct TagScope<'a>(&'a [(String, String)]);

impl Scope for TagScope<'_> {
    fn lookup(&self, name: &str, data_type: Option<DataType>) -> Option<Val> {
        if data_type == Some(DataType::Field) {
            return None;
        }
        // A tag that a series lacks compares as the empty string.
        Some(Val::Str(
            self.0
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_default(),
        ))
    }
}

struct RowScope<'a> {
    tags: &'a [(String, String)],
    fields: &'a BTreeMap<&'a str, Value>,
    field_names: &'a BTreeSet<String>,
}

impl Scope for RowScope<'_> {
    fn lookup(&self, name: &str, data_type: Option<DataType>) -> Option<Val> {
        if data_type != Some(DataType::Tag) && self.field_names.contains(name) {
            return self.fields.get(name).map(Val::of);
        }
        if data_type == Some(DataType::Field) {
            return None;
        }
        TagScope(self.tags).lookup(name, data_type)
    }
}

fn eval(expr: &Expr, scope: &dyn Scope) -> Option<Val> {
    match expr {
        Expr::VarRef { name, data_type } => scope.lookup(name, *data_type),
        Expr::Integer(v) => Some(Val::Integer(*v)),
        Expr::Number(v) => Some(Val::Number(*v)),
        Expr::String(v) => Some(Val::Str(v.clone())),
        Expr::Boolean(v) => Some(Val::Bool(*v)),
        Expr::Duration(v) => Some(Val::Integer(*v)),
        Expr::Paren(inner) => eval(inner, scope),
        Expr::Binary { op, lhs, rhs } => {
            match op {
                BinaryOp::And => {
                    let l = matches!(eval(lhs, scope), Some(Val::Bool(true)));
                    return Some(Val::Bool(
                        l && matches!(eval(rhs, scope), Some(Val::Bool(true))),
                    ));
                }
                BinaryOp::Or => {
                    let l = matches!(eval(lhs, scope), Some(Val::Bool(true)));
                    return Some(Val::Bool(
                        l || matches!(eval(rhs, scope), Some(Val::Bool(true))),
                    ));
                }
                BinaryOp::RegexMatch | BinaryOp::RegexNotMatch => {
                    let Expr::Regex(pattern) = rhs.as_ref() else {
                        return Some(Val::Bool(false));
                    };
                    let Some(regex) = cached_regex(pattern) else {
                        return Some(Val::Bool(false));
                    };
                    let matched = match eval(lhs, scope) {
                        Some(Val::Str(text)) => regex.is_match(&text),
                        _ => return Some(Val::Bool(false)),
                    };
                    return Some(Val::Bool(if *op == BinaryOp::RegexMatch {
                        matched
                    } else {
                        !matched
                    }));
                }
                _ => {}
            }
            let l = eval(lhs, scope)?;
            let r = eval(rhs, scope)?;
            compare_or_compute(*op, &l, &r)
        }
        _ => None,
    }
}

/// Conditions are evaluated per series and per row: compile each pattern once
/// per thread.
fn cached_regex(pattern: &str) -> Option<Regex> {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Regex>> = Default::default();
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(regex) = cache.get(pattern) {
            return Some(regex.clone());
        }
        let regex = Regex::new(pattern).ok()?;
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(pattern.to_string(), regex.clone());
        Some(regex)
    })
}

fn compare_or_compute(op: BinaryOp, l: &Val, r: &Val) -> Option<Val> {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (l, r) {
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) if matches!(op, BinaryOp::Eq | BinaryOp::Neq) => {
            Some(a.cmp(b))
        }
        (Val::Integer(a), Val::Integer(b)) => Some(a.cmp(b)),
        _ => match (l.number(), r.number()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    };
    let result = match op {
        BinaryOp::Eq => ordering == Some(Ordering::Equal),
        BinaryOp::Neq => ordering.is_some_and(|o| o != Ordering::Equal),
        BinaryOp::Lt => ordering == Some(Ordering::Less),
        BinaryOp::Lte => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        BinaryOp::Gt => ordering == Some(Ordering::Greater),
        BinaryOp::Gte => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        _ => {
            let (a, b) = (l.number()?, r.number()?);
            return Some(Val::Number(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => {
                    if b == 0.0 {
                        0.0
                    } else {
                        a / b
                    }
                }
                BinaryOp::Mod => a % b,
                _ => return None,
            }));
        }
    };
    Some(Val::Bool(result))
}

fn tag_filter(condition: &Expr, tags: &[(String, String)]) -> bool {
    matches!(eval(condition, &TagScope(tags)), Some(Val::Bool(true)))
}

/// Names a condition refers to.
fn var_refs<'a>(expr: &'a Expr, out: &mut Vec<(&'a str, Option<DataType>)>) {
    match expr {
        Expr::VarRef { name, data_type } => out.push((name, *data_type)),
        Expr::Binary { lhs, rhs, .. } => {
            var_refs(lhs, out);
            var_refs(rhs, out);
        }
        Expr::Paren(inner) => var_refs(inner, out),
        Expr::Call { args, .. } => args.iter().for_each(|arg| var_refs(arg, out)),
        _ => {}
    }
}

fn is_time_ref(expr: &Expr) -> bool {
    matches!(expr, Expr::VarRef { name, .. } if name.eq_ignore_ascii_case("time"))
}

fn mentions_time(expr: &Expr) -> bool {
    let mut refs = Vec::new();
    var_refs(expr, &mut refs);
    refs.iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("time"))
}

/// A time literal: a string (see [`time_string`]), integer nanoseconds,
/// `now()`, and sums/differences with durations. Strings without an offset
/// are wall-clock times in `zone` (the statement's `tz()`, else UTC).
fn time_value(expr: &Expr, now: i64, zone: Option<&Zone>) -> Result<i64> {
    match expr {
        Expr::String(text) => time_string(text, zone),
        Expr::Integer(v) => Ok(*v),
        Expr::Number(v) => Ok(*v as i64),
        Expr::Duration(v) => Ok(*v),
        Expr::Call { name, args } if name == "now" && args.is_empty() => Ok(now),
        Expr::Paren(inner) => time_value(inner, now, zone),
        Expr::Binary {
            op: BinaryOp::Add,
            lhs,
            rhs,
        } => Ok(time_value(lhs, now, zone)?.saturating_add(time_value(rhs, now, zone)?)),
        Expr::Binary {
            op: BinaryOp::Sub,
            lhs,
            rhs,
        } => Ok(time_value(lhs, now, zone)?.saturating_sub(time_value(rhs, now, zone)?)),
        other => Err(format!("invalid time comparison: {other}")),
    }
}

struct Plan {
    min_time: i64,
    max_time: i64,
    /// Conditions left after the time range was taken out.
    residual: Option<Expr>,
    /// A time condition under OR: InfluxDB then returns nothing.
    nothing: bool,
}

fn plan_condition(condition: Option<&Expr>, now: i64, zone: Option<&Zone>) -> Result<Plan> {
    let mut plan = Plan {
        min_time: MIN_NANO_TIME,
        max_time: MAX_NANO_TIME,
        residual: None,
        nothing: false,
    };
    let Some(condition) = condition else {
        return Ok(plan);
    };
    let mut residual = Vec::new();
    collect_conjuncts(condition, &mut plan, &mut residual, now, zone)?;
    plan.residual = residual
        .into_iter()
        .reduce(|a, b| Expr::binary(BinaryOp::And, a, b));
    Ok(plan)
}

fn collect_conjuncts(
    expr: &Expr,
    plan: &mut Plan,
    residual: &mut Vec<Expr>,
    now: i64,
    zone: Option<&Zone>,
) -> Result<()> {
    match expr {
        Expr::Paren(inner) => collect_conjuncts(inner, plan, residual, now, zone),
        Expr::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => {
            collect_conjuncts(lhs, plan, residual, now, zone)?;
            collect_conjuncts(rhs, plan, residual, now, zone)
        }
        Expr::Binary { op, lhs, rhs }
            if matches!(
                op,
                BinaryOp::Eq | BinaryOp::Lt | BinaryOp::Lte | BinaryOp::Gt | BinaryOp::Gte
            ) && (is_time_ref(lhs) || is_time_ref(rhs)) =>
        {
            let (op, other) = if is_time_ref(lhs) {
                (*op, rhs.as_ref())
            } else {
                let flipped = match op {
                    BinaryOp::Lt => BinaryOp::Gt,
                    BinaryOp::Lte => BinaryOp::Gte,
                    BinaryOp::Gt => BinaryOp::Lt,
                    BinaryOp::Gte => BinaryOp::Lte,
                    other => *other,
                };
                (flipped, lhs.as_ref())
            };
            let value = time_value(other, now, zone)?;
            match op {
                BinaryOp::Eq => {
                    plan.min_time = plan.min_time.max(value);
                    plan.max_time = plan.max_time.min(value);
                }
                BinaryOp::Gt => plan.min_time = plan.min_time.max(value.saturating_add(1)),
                BinaryOp::Gte => plan.min_time = plan.min_time.max(value),
                BinaryOp::Lt => plan.max_time = plan.max_time.min(value.saturating_sub(1)),
                BinaryOp::Lte => plan.max_time = plan.max_time.min(value),
                _ => {}
            }
            Ok(())
        }
        Expr::Binary {
            op: BinaryOp::Or, ..
        } if mentions_time(expr) => {
            plan.nothing = true;
            Ok(())
        }
        Expr::Binary {
            op:
                BinaryOp::Eq
                | BinaryOp::Neq
                | BinaryOp::Lt
                | BinaryOp::Lte
                | BinaryOp::Gt
                | BinaryOp::Gte
                | BinaryOp::RegexMatch
                | BinaryOp::RegexNotMatch
                | BinaryOp::Or,
            ..
        } => {
            residual.push(expr.clone());
            Ok(())
        }
        other => Err(format!("invalid condition expression: {other}")),
    }
}

// ---------------------------------------------------------------- SELECT

mod literal;
mod select;

use literal::time_string;

pub(crate) use select::{series_partials, series_rows};

fn execute_select(
    select: &SelectStatement,
    context: &QueryContext,
    storage: &Storage,
) -> Result<StatementResult> {
    select::execute_select(select, context, storage)
}
