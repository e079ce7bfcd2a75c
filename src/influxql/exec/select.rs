//! SELECT: raw queries (fields, tags, arithmetic and math functions per row)
//! and aggregate queries (aggregates and selectors per GROUP BY time window
//! and tag set, with fill, transformations and arithmetic on the results).
//!
//! Execution reads the fields a group needs, one series at a time, and keeps
//! only the points of the group being computed.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::influxql::QueryLimits;
use crate::storage::{SeriesFilter, Take};
use rand::seq::IteratorRandom;

mod gosort;
mod streams;
mod zoned;

/// Aggregates and selectors: they reduce the points of a window.
const AGGREGATES: &[&str] = &[
    "count",
    "distinct",
    "integral",
    "mean",
    "median",
    "mode",
    "spread",
    "stddev",
    "sum",
    "first",
    "last",
    "max",
    "min",
    "percentile",
    "sample",
    "top",
    "bottom",
];
/// Selectors keep the time of the point they select.
const SELECTORS: &[&str] = &[
    "first",
    "last",
    "max",
    "min",
    "percentile",
    "sample",
    "top",
    "bottom",
];
/// Transformations of a series of values (of raw points or of windows).
const TRANSFORMS: &[&str] = &[
    "derivative",
    "non_negative_derivative",
    "difference",
    "non_negative_difference",
    "moving_average",
    "cumulative_sum",
    "elapsed",
];
/// Functions applied to each value.
const MATH: &[&str] = &[
    "abs", "ceil", "floor", "round", "sqrt", "pow", "ln", "log", "log2", "log10", "exp", "sin",
    "cos", "tan", "asin", "acos", "atan", "atan2",
];

/// The most windows one query may produce per series.
const MAX_BUCKETS: i64 = 1_000_000;

fn is_aggregate(name: &str) -> bool {
    AGGREGATES.contains(&name)
}

fn contains_aggregate(expr: &Expr) -> bool {
    match expr {
        Expr::Call { name, args } => is_aggregate(name) || args.iter().any(contains_aggregate),
        Expr::Binary { lhs, rhs, .. } => contains_aggregate(lhs) || contains_aggregate(rhs),
        Expr::Paren(inner) => contains_aggregate(inner),
        _ => false,
    }
}

/// Field references outside of any aggregate call.
fn raw_refs<'a>(expr: &'a Expr, out: &mut Vec<&'a str>) {
    let mut typed = Vec::new();
    raw_typed_refs(expr, &mut typed);
    out.extend(typed.into_iter().map(|(name, _)| name));
}

/// Field references outside of any aggregate call, with their `::type`.
fn raw_typed_refs<'a>(expr: &'a Expr, out: &mut Vec<(&'a str, Option<DataType>)>) {
    match expr {
        Expr::VarRef { name, data_type } => out.push((name, *data_type)),
        Expr::Call { name, args }
            if !is_aggregate(name) && !TRANSFORMS.contains(&name.as_str()) =>
        {
            args.iter().for_each(|arg| raw_typed_refs(arg, out))
        }
        Expr::Binary { lhs, rhs, .. } => {
            raw_typed_refs(lhs, out);
            raw_typed_refs(rhs, out);
        }
        Expr::Paren(inner) => raw_typed_refs(inner, out),
        _ => {}
    }
}

/// Whether an output expression refers to a field or tag (InfluxDB refuses
/// `SELECT 1` and `SELECT v, 2`: "field must contain at least one variable").
fn has_variable(expr: &Expr) -> bool {
    match expr {
        Expr::VarRef { .. } | Expr::Wildcard { .. } | Expr::Regex(_) => true,
        Expr::Call { args, .. } => args.iter().any(has_variable),
        Expr::Binary { lhs, rhs, .. } => has_variable(lhs) || has_variable(rhs),
        Expr::Paren(inner) => has_variable(inner),
        _ => false,
    }
}

/// A field's value as its `::type` asks: as InfluxDB casts, numbers
/// convert between float, integer and unsigned (a float truncated), and a
/// cast to another type gives no value.
fn cast_value(value: &Value, to: Option<DataType>) -> Option<Cell> {
    Some(match (to, value) {
        (None | Some(DataType::Field) | Some(DataType::Tag), value) => cell_of(value),
        (Some(DataType::Float), Value::Float(v)) => Cell::Float(*v),
        (Some(DataType::Float), Value::Integer(v)) => Cell::Float(*v as f64),
        (Some(DataType::Float), Value::Unsigned(v)) => Cell::Float(*v as f64),
        (Some(DataType::Integer), Value::Integer(v)) => Cell::Integer(*v),
        (Some(DataType::Integer), Value::Float(v)) => Cell::Integer(*v as i64),
        (Some(DataType::Integer), Value::Unsigned(v)) => Cell::Integer(*v as i64),
        (Some(DataType::Unsigned), Value::Unsigned(v)) => Cell::Unsigned(*v),
        (Some(DataType::Unsigned), Value::Integer(v)) => Cell::Unsigned(*v as u64),
        (Some(DataType::Unsigned), Value::Float(v)) => Cell::Unsigned(*v as u64),
        (Some(DataType::String), Value::String(v)) => Cell::String(v.clone()),
        (Some(DataType::Boolean), Value::Boolean(v)) => Cell::Boolean(*v),
        _ => return None,
    })
}

/// InfluxDB's column name for an expression: the names of the fields and
/// calls in it, joined by `_`.
fn column_name(expr: &Expr) -> String {
    fn walk(expr: &Expr, out: &mut Vec<String>) {
        match expr {
            Expr::VarRef { name, .. } => out.push(name.clone()),
            Expr::Call { name, .. } => out.push(name.clone()),
            Expr::Binary { lhs, rhs, .. } => {
                walk(lhs, out);
                walk(rhs, out);
            }
            Expr::Paren(inner) => walk(inner, out),
            _ => {}
        }
    }
    let mut names = Vec::new();
    walk(expr, &mut names);
    names.join("_")
}

struct OutColumn {
    name: String,
    expr: Expr,
    /// Named by `AS`: the name is kept as it is.
    aliased: bool,
}

/// InfluxDB's column names: aliases first, as they are; then each generated
/// name that is taken gets the first free `_<n>` suffix.
fn dedup_names(columns: &mut [OutColumn]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for column in columns.iter().filter(|c| c.aliased) {
        seen.insert(column.name.clone(), 1);
    }
    for column in columns.iter_mut().filter(|c| !c.aliased) {
        let name = column.name.clone();
        if let Some(&taken) = seen.get(&name) {
            let mut count = taken;
            loop {
                let resolved = format!("{name}_{count}");
                if !seen.contains_key(&resolved) {
                    seen.insert(name.clone(), count + 1);
                    column.name = resolved;
                    break;
                }
                count += 1;
            }
        }
        *seen.entry(column.name.clone()).or_insert(0) += 1;
    }
}

struct Schema {
    fields: BTreeMap<String, FieldType>,
    tags: BTreeSet<String>,
}

/// The innermost call of `f(g(*))` (or `f(/regex/)`), and its argument.
fn wildcard_call(expr: &Expr) -> Option<(&str, &Expr)> {
    let Expr::Call { name, args } = expr else {
        return None;
    };
    if !(is_aggregate(name) || TRANSFORMS.contains(&name.as_str())) {
        return None;
    }
    match args.first()? {
        arg @ (Expr::Wildcard { .. } | Expr::Regex(_)) => Some((name, arg)),
        inner @ Expr::Call { .. } => wildcard_call(inner),
        _ => None,
    }
}

/// `f(g(*))` with the wildcard replaced by a field.
fn with_wildcard_field(expr: &Expr, field: &str) -> Expr {
    match expr {
        Expr::Call { name, args } => {
            let mut args = args.clone();
            if let Some(first) = args.first_mut() {
                let replaced = match &*first {
                    Expr::Wildcard { .. } | Expr::Regex(_) => Expr::VarRef {
                        name: field.to_string(),
                        data_type: None,
                    },
                    inner => with_wildcard_field(inner, field),
                };
                *first = replaced;
            }
            Expr::Call {
                name: name.clone(),
                args,
            }
        }
        other => other.clone(),
    }
}

/// The fields a wildcard in a call expands to, by the innermost call:
/// numbers always; strings for a few; booleans for those and min/max.
fn wildcard_expands_to(call: &str, field_type: FieldType) -> bool {
    let any_type = matches!(
        call,
        "count" | "first" | "last" | "distinct" | "elapsed" | "mode" | "sample"
    );
    match field_type {
        FieldType::Float | FieldType::Integer | FieldType::Unsigned => true,
        FieldType::String => any_type,
        FieldType::Boolean => any_type || matches!(call, "min" | "max"),
    }
}

/// Expand `*`, `*::field`, `/regex/`, `count(*)`, `count(/regex/)` and
/// `derivative(mean(*))` into one column per field (and tag).
fn expand_columns(
    select: &SelectStatement,
    schema: &Schema,
    group_tags: &[String],
) -> Result<Vec<OutColumn>> {
    let mut columns = Vec::new();
    for field in &select.fields {
        match &field.expr {
            Expr::Wildcard { data_type } => {
                let mut names: Vec<(String, Expr)> = Vec::new();
                if *data_type != Some(DataType::Tag) {
                    for name in schema.fields.keys() {
                        names.push((
                            name.clone(),
                            Expr::VarRef {
                                name: name.clone(),
                                data_type: Some(DataType::Field),
                            },
                        ));
                    }
                }
                if *data_type != Some(DataType::Field) {
                    for tag in &schema.tags {
                        if !group_tags.contains(tag) && !schema.fields.contains_key(tag) {
                            names.push((
                                tag.clone(),
                                Expr::VarRef {
                                    name: tag.clone(),
                                    data_type: Some(DataType::Tag),
                                },
                            ));
                        }
                    }
                }
                names.sort_by(|a, b| a.0.cmp(&b.0));
                columns.extend(names.into_iter().map(|(name, expr)| OutColumn {
                    name,
                    expr,
                    aliased: false,
                }));
            }
            Expr::Regex(pattern) => {
                let regex = compile(pattern)?;
                let mut names: Vec<String> = schema
                    .fields
                    .keys()
                    .filter(|f| regex.is_match(f))
                    .cloned()
                    .collect();
                names.extend(
                    schema
                        .tags
                        .iter()
                        .filter(|t| {
                            regex.is_match(t)
                                && !group_tags.contains(t)
                                && !schema.fields.contains_key(*t)
                        })
                        .cloned(),
                );
                names.sort();
                columns.extend(names.into_iter().map(|name| OutColumn {
                    expr: Expr::VarRef {
                        name: name.clone(),
                        data_type: None,
                    },
                    name,
                    aliased: false,
                }));
            }
            Expr::Call { name, .. } if wildcard_call(&field.expr).is_some() => {
                let Some((innermost, wildcard)) = wildcard_call(&field.expr) else {
                    continue;
                };
                let regex = match wildcard {
                    Expr::Regex(pattern) => Some(compile(pattern)?),
                    _ => None,
                };
                for (field_name, field_type) in &schema.fields {
                    if regex.as_ref().is_some_and(|r| !r.is_match(field_name))
                        || !wildcard_expands_to(innermost, *field_type)
                    {
                        continue;
                    }
                    // InfluxDB names these columns by alias.
                    columns.push(OutColumn {
                        name: format!("{name}_{field_name}"),
                        expr: with_wildcard_field(&field.expr, field_name),
                        aliased: true,
                    });
                }
            }
            // `time` is the time column, there anyway.
            Expr::VarRef { name, .. } if name.eq_ignore_ascii_case("time") => {}
            expr => columns.push(OutColumn {
                name: field.alias.clone().unwrap_or_else(|| column_name(expr)),
                expr: expr.clone(),
                aliased: field.alias.is_some(),
            }),
        }
    }
    dedup_names(&mut columns);
    Ok(columns)
}

// ---------------------------------------------------------------- values

fn cell_of(value: &Value) -> Cell {
    match value {
        Value::Float(v) => Cell::Float(*v),
        Value::Integer(v) => Cell::Integer(*v),
        Value::Unsigned(v) => Cell::Unsigned(*v),
        Value::String(v) => Cell::String(v.clone()),
        Value::Boolean(v) => Cell::Boolean(*v),
    }
}

fn as_f64(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Float(v) => Some(*v),
        Cell::Integer(v) => Some(*v as f64),
        Cell::Unsigned(v) => Some(*v as f64),
        _ => None,
    }
}

fn arithmetic(op: BinaryOp, l: &Cell, r: &Cell) -> Cell {
    if let (Cell::Integer(a), Cell::Integer(b)) = (l, r) {
        return match op {
            BinaryOp::Add => Cell::Integer(a.wrapping_add(*b)),
            BinaryOp::Sub => Cell::Integer(a.wrapping_sub(*b)),
            BinaryOp::Mul => Cell::Integer(a.wrapping_mul(*b)),
            BinaryOp::Div => {
                if *b == 0 {
                    Cell::Float(0.0)
                } else {
                    Cell::Float(*a as f64 / *b as f64)
                }
            }
            BinaryOp::Mod => {
                if *b == 0 {
                    Cell::Integer(0)
                } else {
                    Cell::Integer(a.wrapping_rem(*b))
                }
            }
            BinaryOp::BitAnd => Cell::Integer(a & b),
            BinaryOp::BitOr => Cell::Integer(a | b),
            BinaryOp::BitXor => Cell::Integer(a ^ b),
            _ => compare_cells(op, l, r),
        };
    }
    let (Some(a), Some(b)) = (as_f64(l), as_f64(r)) else {
        return match op {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
                Cell::Null
            }
            _ => compare_cells(op, l, r),
        };
    };
    match op {
        BinaryOp::Add => Cell::Float(a + b),
        BinaryOp::Sub => Cell::Float(a - b),
        BinaryOp::Mul => Cell::Float(a * b),
        BinaryOp::Div => Cell::Float(if b == 0.0 { 0.0 } else { a / b }),
        BinaryOp::Mod => Cell::Float(if b == 0.0 { 0.0 } else { a % b }),
        _ => compare_cells(op, l, r),
    }
}

fn compare_cells(op: BinaryOp, l: &Cell, r: &Cell) -> Cell {
    let to_val = |cell: &Cell| match cell {
        Cell::Float(v) => Some(Val::Number(*v)),
        Cell::Integer(v) => Some(Val::Integer(*v)),
        Cell::Unsigned(v) => Some(Val::Number(*v as f64)),
        Cell::String(v) => Some(Val::Str(v.clone())),
        Cell::Boolean(v) => Some(Val::Bool(*v)),
        _ => None,
    };
    match (to_val(l), to_val(r)) {
        (Some(a), Some(b)) => match compare_or_compute(op, &a, &b) {
            Some(Val::Bool(v)) => Cell::Boolean(v),
            _ => Cell::Null,
        },
        _ => Cell::Null,
    }
}

fn math(name: &str, args: &[Cell]) -> Cell {
    let Some(x) = args.first().and_then(as_f64) else {
        return Cell::Null;
    };
    let keep_int = |v: f64| match args.first() {
        Some(Cell::Integer(i)) => Cell::Integer(*i),
        _ => Cell::Float(v),
    };
    match name {
        "abs" => match args.first() {
            Some(Cell::Integer(i)) => Cell::Integer(i.wrapping_abs()),
            _ => Cell::Float(x.abs()),
        },
        "ceil" => keep_int(x.ceil()),
        "floor" => keep_int(x.floor()),
        "round" => keep_int(x.round()),
        "sqrt" => Cell::Float(x.sqrt()),
        "ln" => Cell::Float(x.ln()),
        "log2" => Cell::Float(x.log2()),
        "log10" => Cell::Float(x.log10()),
        "exp" => Cell::Float(x.exp()),
        "sin" => Cell::Float(x.sin()),
        "cos" => Cell::Float(x.cos()),
        "tan" => Cell::Float(x.tan()),
        "asin" => Cell::Float(x.asin()),
        "acos" => Cell::Float(x.acos()),
        "atan" => Cell::Float(x.atan()),
        "pow" | "log" | "atan2" => {
            let Some(y) = args.get(1).and_then(as_f64) else {
                return Cell::Null;
            };
            Cell::Float(match name {
                "pow" => x.powf(y),
                "log" => x.ln() / y.ln(),
                _ => x.atan2(y),
            })
        }
        _ => Cell::Null,
    }
}

/// Evaluate an output expression: `lookup` resolves field and tag names (and,
/// for aggregate queries, the calls already computed, by their printed form).
fn evaluate(expr: &Expr, lookup: &dyn Fn(&Expr) -> Option<Cell>) -> Cell {
    if let Some(cell) = lookup(expr) {
        return cell;
    }
    match expr {
        Expr::Integer(v) => Cell::Integer(*v),
        Expr::Number(v) => Cell::Float(*v),
        Expr::String(v) => Cell::String(v.clone()),
        Expr::Boolean(v) => Cell::Boolean(*v),
        Expr::Duration(v) => Cell::Integer(*v),
        Expr::Paren(inner) => evaluate(inner, lookup),
        Expr::Binary { op, lhs, rhs } => {
            let l = evaluate(lhs, lookup);
            let r = evaluate(rhs, lookup);
            if matches!(l, Cell::Null) || matches!(r, Cell::Null) {
                return Cell::Null;
            }
            arithmetic(*op, &l, &r)
        }
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => {
            let values: Vec<Cell> = args.iter().map(|arg| evaluate(arg, lookup)).collect();
            math(name, &values)
        }
        _ => Cell::Null,
    }
}

// ---------------------------------------------------------------- plan

pub(super) fn execute_select(
    select: &SelectStatement,
    context: &QueryContext,
    storage: &Storage,
) -> Result<StatementResult> {
    let non_time = select
        .fields
        .iter()
        .any(|field| !matches!(&field.expr, Expr::VarRef { name, .. } if name.eq_ignore_ascii_case("time")));
    if !non_time {
        return Err("at least 1 non-time field must be queried".into());
    }
    // A zone whose offset is always zero changes nothing: UTC path.
    let zone = select.timezone.as_ref().filter(|zone| !zone.is_utc());
    let aggregate = select
        .fields
        .iter()
        .any(|field| contains_aggregate(&field.expr));
    // Transformations: each call a stream, joined by time (streams.rs).
    let transformed = streams::has_transform(select);
    if transformed {
        streams::validate(select)?;
    } else if aggregate {
        validate_calls(select)?;
    }
    // After the calls' own checks, as InfluxDB orders its errors.
    if !select.fields.iter().all(|field| has_variable(&field.expr)) {
        return Err("field must contain at least one variable".into());
    }
    if !transformed
        && !aggregate
        && select
            .dimensions
            .iter()
            .any(|d| matches!(d, Dimension::Time { .. }))
    {
        return Err("GROUP BY requires at least one aggregate function".into());
    }
    for field in &select.fields {
        check_known_calls(&field.expr)?;
    }
    let plan = plan_condition(
        select.condition.as_ref(),
        context.now,
        select.timezone.as_ref(),
    )?;
    let counters = Counters::default();
    let mut out = Vec::new();
    for source in &select.sources {
        let (data, measurements): (Box<dyn DataSource + '_>, Vec<String>) = match source {
            Source::Subquery(inner) => {
                let mut inner = with_outer_time(inner, select, &plan);
                // As InfluxDB: a subquery's fill(null) is fill(none) (the outer
                // query would skip its null rows anyway).
                let by_time = inner
                    .dimensions
                    .iter()
                    .any(|d| matches!(d, Dimension::Time { .. }));
                if by_time && matches!(inner.fill, None | Some(Fill::Null)) {
                    inner.fill = Some(Fill::None);
                }
                let result = execute_select(&inner, context, storage)?;
                let data = SubqueryData::new(result.series);
                let measurements = data.measurements()?;
                (Box::new(data), measurements)
            }
            Source::Measurement {
                database: explicit_db,
                rp,
                name,
            } => {
                let db = explicit_db
                    .as_deref()
                    .or(context.database.as_deref())
                    .ok_or_else(|| "database name required".to_string())?;
                require_database(storage, db)?;
                let rp = match rp.as_deref().or(context.retention_policy.as_deref()) {
                    Some(rp) => rp.to_string(),
                    None => storage
                        .default_retention_policy(db)
                        .map_err(storage_error)?,
                };
                if !storage
                    .retention_policies(db)
                    .map_err(storage_error)?
                    .iter()
                    .any(|p| p.name == rp)
                {
                    return Err(format!("retention policy not found: {rp}"));
                }
                let data = StoredData {
                    storage,
                    db: db.to_string(),
                    rp,
                    cluster: context.cluster.as_deref(),
                };
                let measurements: Vec<String> = match name {
                    MeasurementMatch::Name(name) => vec![name.clone()],
                    MeasurementMatch::Regex(_) => {
                        let matcher = MeasurementMatcher::new(name)?;
                        data.measurements()?
                            .into_iter()
                            .filter(|m| matcher.matches(m))
                            .collect()
                    }
                };
                (Box::new(data), measurements)
            }
        };
        for measurement in measurements {
            if plan.nothing {
                continue;
            }
            let query = MeasurementQuery {
                select,
                plan: &plan,
                source: data.as_ref(),
                measurement: &measurement,
                zone,
                now: context.now,
                limits: &context.limits,
                counters: &counters,
            };
            let series = if transformed {
                query.transformed()?
            } else if aggregate {
                query.aggregate()?
            } else {
                query.raw()?
            };
            out.extend(series);
        }
    }
    let mut result = with_series(out);
    result.zone = zone.cloned();
    Ok(result)
}

fn check_known_calls(expr: &Expr) -> Result<()> {
    match expr {
        Expr::Call { name, args } => {
            if !(is_aggregate(name)
                || TRANSFORMS.contains(&name.as_str())
                || MATH.contains(&name.as_str()))
            {
                return Err(format!("undefined function {name}()"));
            }
            args.iter().try_for_each(check_known_calls)
        }
        Expr::Binary { lhs, rhs, .. } => {
            check_known_calls(lhs)?;
            check_known_calls(rhs)
        }
        Expr::Paren(inner) => check_known_calls(inner),
        _ => Ok(()),
    }
}

fn validate_calls(select: &SelectStatement) -> Result<()> {
    let mut selectors = 0;
    let mut aggregates = 0;
    let mut raw = Vec::new();
    for field in &select.fields {
        raw_refs(&field.expr, &mut raw);
        count_calls(&field.expr, &mut selectors, &mut aggregates)?;
    }
    raw.retain(|name| !name.eq_ignore_ascii_case("time"));
    let wildcard = select
        .fields
        .iter()
        .any(|f| matches!(f.expr, Expr::Wildcard { .. }));
    if wildcard || !(raw.is_empty() || selectors == 1 && aggregates == 1) {
        return Err("mixing aggregate and non-aggregate queries is not supported".into());
    }
    Ok(())
}

fn count_calls(expr: &Expr, selectors: &mut usize, aggregates: &mut usize) -> Result<()> {
    match expr {
        Expr::Call { name, args } => {
            if is_aggregate(name) {
                *aggregates += 1;
                if SELECTORS.contains(&name.as_str()) {
                    *selectors += 1;
                }
                check_arguments(name, args)?;
            }
            for arg in args {
                count_calls(arg, selectors, aggregates)?;
            }
            Ok(())
        }
        Expr::Binary { lhs, rhs, .. } => {
            count_calls(lhs, selectors, aggregates)?;
            count_calls(rhs, selectors, aggregates)
        }
        Expr::Paren(inner) => count_calls(inner, selectors, aggregates),
        _ => Ok(()),
    }
}

fn check_arguments(name: &str, args: &[Expr]) -> Result<()> {
    let got = args.len();
    match name {
        "percentile" if got != 2 => Err(format!(
            "invalid number of arguments for percentile, expected 2, got {got}"
        )),
        "sample" if got != 2 => Err(format!(
            "invalid number of arguments for sample, expected 2, got {got}"
        )),
        "top" | "bottom" if got < 2 => Err(format!(
            "invalid number of arguments for {name}, expected at least 2, got {got}"
        )),
        "distinct" if got != 1 => Err("distinct function can only have one argument".into()),
        "integral" if got == 0 || got > 2 => Err(format!(
            "invalid number of arguments for integral, expected 1 or 2, got {got}"
        )),
        "percentile" | "sample" | "top" | "bottom" | "distinct" | "integral" => Ok(()),
        _ if got != 1 => Err(format!(
            "invalid number of arguments for {name}, expected 1, got {got}"
        )),
        _ => Ok(()),
    }
}

struct MeasurementQuery<'a> {
    select: &'a SelectStatement,
    plan: &'a Plan,
    source: &'a dyn DataSource,
    measurement: &'a str,
    /// `tz()`, unless UTC: GROUP BY time windows follow its local time.
    zone: Option<&'a Zone>,
    now: i64,
    limits: &'a QueryLimits,
    counters: &'a Counters,
}

/// Where a SELECT reads: the storage engine, or the rows of a subquery.
trait DataSource {
    fn measurements(&self) -> Result<Vec<String>>;
    fn field_types(&self, measurement: &str) -> Result<Vec<(String, FieldType)>>;
    fn tag_keys(&self, measurement: &str) -> Result<Vec<String>>;
    fn series_where(&self, measurement: &str, keep: &SeriesFilter<'_>) -> Result<Vec<SeriesInfo>>;
    fn read_field(
        &self,
        series: &SeriesInfo,
        field: &str,
        min: i64,
        max: i64,
        take: Option<Take>,
    ) -> Result<Vec<(i64, Value)>>;

    /// The partial states of one field of one series computed where the
    /// series is held, with the number of points they cover; `None`: fold
    /// the points here.
    fn partials(
        &self,
        _series: &SeriesInfo,
        _field: &str,
        _range: (i64, i64),
        _shape: &PartialShape<'_>,
    ) -> Result<Option<CountedPartials>> {
        Ok(None)
    }

    /// The rows of `fields` of one series that satisfy `condition`,
    /// filtered where the series is held; `None`: read and filter here.
    fn rows(
        &self,
        _series: &SeriesInfo,
        _fields: &[String],
        _range: (i64, i64),
        _condition: &Expr,
        _field_names: &[String],
    ) -> Result<Option<Table>> {
        Ok(None)
    }

    /// The shard group duration of the points read (InfluxDB merges the
    /// series of each shard group on its own); `None`: one group.
    fn shard_group_duration(&self) -> Option<i64> {
        None
    }
}

struct StoredData<'a> {
    storage: &'a Storage,
    db: String,
    rp: String,
    /// Points of series this node does not hold come from their replicas.
    cluster: Option<&'a crate::cluster::Cluster>,
}

impl DataSource for StoredData<'_> {
    fn measurements(&self) -> Result<Vec<String>> {
        self.storage.measurements(&self.db).map_err(storage_error)
    }
    fn field_types(&self, measurement: &str) -> Result<Vec<(String, FieldType)>> {
        self.storage
            .field_types(&self.db, measurement)
            .map_err(storage_error)
    }
    fn tag_keys(&self, measurement: &str) -> Result<Vec<String>> {
        self.storage
            .tag_keys(&self.db, measurement)
            .map_err(storage_error)
    }
    fn series_where(&self, measurement: &str, keep: &SeriesFilter<'_>) -> Result<Vec<SeriesInfo>> {
        self.storage
            .series_where(&self.db, measurement, keep)
            .map_err(storage_error)
    }
    fn read_field(
        &self,
        series: &SeriesInfo,
        field: &str,
        min: i64,
        max: i64,
        take: Option<Take>,
    ) -> Result<Vec<(i64, Value)>> {
        if let Some(cluster) = self.cluster {
            if let Some(values) =
                cluster.read_field(&self.db, &self.rp, series, field, (min, max), take)?
            {
                return Ok(values);
            }
        }
        self.storage
            .read_field(&self.db, &self.rp, series.id, field, (min, max), take)
            .map_err(storage_error)
    }

    fn partials(
        &self,
        series: &SeriesInfo,
        field: &str,
        range: (i64, i64),
        shape: &PartialShape<'_>,
    ) -> Result<Option<CountedPartials>> {
        let Some(cluster) = self.cluster else {
            return Ok(None);
        };
        let names: Vec<String> = shape
            .calls
            .iter()
            .map(|call| match call {
                Expr::Call { name, .. } => name.clone(),
                _ => String::new(),
            })
            .collect();
        let request = crate::cluster::PartialsRequest {
            db: self.db.clone(),
            rp: self.rp.clone(),
            series_key: series.key.clone(),
            field: field.to_string(),
            calls: names,
            indexes: shape.indexes.iter().map(|&i| i as u64).collect(),
            interval: shape.interval,
            tz: shape.zone.map(|zone| zone.name().to_string()),
            descending: shape.descending,
            min: range.0,
            max: range.1,
            origin: shape.origin,
            member: shape.member as u64,
        };
        let Some((points, bytes)) = cluster.partials(request)? else {
            return Ok(None);
        };
        let wire: WirePartials =
            rmp_serde::from_slice(&bytes).map_err(|e| format!("bad partial states: {e}"))?;
        Ok(Some((points, wire.into_iter().collect())))
    }

    fn rows(
        &self,
        series: &SeriesInfo,
        fields: &[String],
        range: (i64, i64),
        condition: &Expr,
        field_names: &[String],
    ) -> Result<Option<Table>> {
        let Some(cluster) = self.cluster else {
            return Ok(None);
        };
        let request = crate::cluster::RowsRequest {
            db: self.db.clone(),
            rp: self.rp.clone(),
            series_key: series.key.clone(),
            tags: series.tags.clone(),
            fields: fields.to_vec(),
            min: range.0,
            max: range.1,
            condition: condition.to_string(),
            field_names: field_names.to_vec(),
        };
        let Some(bytes) = cluster.rows(request)? else {
            return Ok(None);
        };
        let table: Table = rmp_serde::from_slice(&bytes).map_err(|e| format!("bad rows: {e}"))?;
        Ok(Some(table))
    }

    fn shard_group_duration(&self) -> Option<i64> {
        let policies = self.storage.retention_policies(&self.db).ok()?;
        let policy = policies.into_iter().find(|p| p.name == self.rp)?;
        i64::try_from(policy.shard_group_duration.as_nanos())
            .ok()
            .filter(|d| *d > 0)
    }
}

/// The values of each field of one series, by field name.
type FieldColumns = BTreeMap<String, Vec<(i64, Value)>>;

/// The result of a subquery, read as measurements: each result series is a
/// series (its name and GROUP BY tags), each column but time a field.
struct SubqueryData {
    series: Vec<(SeriesInfo, FieldColumns)>,
    fields: BTreeMap<String, BTreeMap<String, FieldType>>,
}

fn value_of_cell(cell: &Cell) -> Option<Value> {
    Some(match cell {
        Cell::Float(v) => Value::Float(*v),
        Cell::Integer(v) | Cell::Time(v) => Value::Integer(*v),
        Cell::Unsigned(v) => Value::Unsigned(*v),
        Cell::String(v) => Value::String(v.clone()),
        Cell::Boolean(v) => Value::Boolean(*v),
        Cell::Null => return None,
    })
}

impl SubqueryData {
    fn new(results: Vec<ResultSeries>) -> SubqueryData {
        let mut series = Vec::new();
        let mut fields: BTreeMap<String, BTreeMap<String, FieldType>> = BTreeMap::new();
        for (id, result) in results.into_iter().enumerate() {
            let measurement = result.name.clone().unwrap_or_default();
            let mut tags = result.tags.clone().unwrap_or_default();
            tags.sort();
            let key = crate::lineproto::series_key(&measurement, &tags);
            let mut columns: FieldColumns = BTreeMap::new();
            for row in &result.values {
                let Some(Cell::Time(time)) = row.first() else {
                    continue;
                };
                for (name, cell) in result.columns.iter().zip(row.iter()).skip(1) {
                    if let Some(value) = value_of_cell(cell) {
                        fields
                            .entry(measurement.clone())
                            .or_default()
                            .entry(name.clone())
                            .or_insert(value.field_type());
                        columns
                            .entry(name.clone())
                            .or_default()
                            .push((*time, value));
                    }
                }
            }
            for values in columns.values_mut() {
                values.sort_by_key(|(time, _)| *time);
            }
            series.push((
                SeriesInfo {
                    id: id as u64,
                    measurement,
                    tags,
                    key,
                },
                columns,
            ));
        }
        SubqueryData { series, fields }
    }
}

impl DataSource for SubqueryData {
    fn measurements(&self) -> Result<Vec<String>> {
        let names: BTreeSet<String> = self
            .series
            .iter()
            .map(|(info, _)| info.measurement.clone())
            .collect();
        Ok(names.into_iter().collect())
    }
    fn field_types(&self, measurement: &str) -> Result<Vec<(String, FieldType)>> {
        Ok(self
            .fields
            .get(measurement)
            .map(|fields| fields.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default())
    }
    fn tag_keys(&self, measurement: &str) -> Result<Vec<String>> {
        let keys: BTreeSet<String> = self
            .series
            .iter()
            .filter(|(info, _)| info.measurement == measurement)
            .flat_map(|(info, _)| info.tags.iter().map(|(k, _)| k.clone()))
            .collect();
        Ok(keys.into_iter().collect())
    }
    fn series_where(&self, measurement: &str, keep: &SeriesFilter<'_>) -> Result<Vec<SeriesInfo>> {
        let mut out: Vec<SeriesInfo> = self
            .series
            .iter()
            .filter(|(info, _)| info.measurement == measurement && keep.admits(&info.tags))
            .map(|(info, _)| info.clone())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
    fn read_field(
        &self,
        series: &SeriesInfo,
        field: &str,
        min: i64,
        max: i64,
        take: Option<Take>,
    ) -> Result<Vec<(i64, Value)>> {
        let Some((_, columns)) = usize::try_from(series.id)
            .ok()
            .and_then(|i| self.series.get(i))
        else {
            return Ok(Vec::new());
        };
        let mut values: Vec<(i64, Value)> = columns
            .get(field)
            .map(|values| {
                values
                    .iter()
                    .filter(|(t, _)| *t >= min && *t <= max)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Take::apply(take, &mut values);
        Ok(values)
    }
}

/// A subquery without a time condition runs over the outer query's time range.
fn with_outer_time(
    inner: &SelectStatement,
    outer: &SelectStatement,
    plan: &Plan,
) -> SelectStatement {
    let mut inner = inner.clone();
    let inner_has_time = inner.condition.as_ref().is_some_and(mentions_time);
    let outer_has_time = outer.condition.as_ref().is_some_and(mentions_time);
    if inner_has_time || !outer_has_time {
        return inner;
    }
    let time = |op, value| {
        Expr::binary(
            op,
            Expr::VarRef {
                name: "time".into(),
                data_type: None,
            },
            Expr::Integer(value),
        )
    };
    let range = Expr::binary(
        BinaryOp::And,
        time(BinaryOp::Gte, plan.min_time),
        time(BinaryOp::Lte, plan.max_time),
    );
    inner.condition = Some(match inner.condition.take() {
        Some(condition) => Expr::binary(BinaryOp::And, range, Expr::Paren(Box::new(condition))),
        None => range,
    });
    inner
}

/// What a statement has read so far, against its limits.
#[derive(Default)]
struct Counters {
    series: std::cell::Cell<u64>,
    points: std::cell::Cell<u64>,
}

/// The series of one output group.
struct Group {
    tag_values: Vec<String>,
    series: Vec<SeriesInfo>,
}

impl MeasurementQuery<'_> {
    fn schema(&self) -> Result<Schema> {
        Ok(Schema {
            fields: self
                .source
                .field_types(self.measurement)?
                .into_iter()
                .collect(),
            tags: self
                .source
                .tag_keys(self.measurement)?
                .into_iter()
                .collect(),
        })
    }

    fn group_tags(&self, schema: &Schema) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for dimension in &self.select.dimensions {
            match dimension {
                Dimension::Tag(tag) => keys.push(tag.clone()),
                Dimension::Wildcard => keys.extend(schema.tags.iter().cloned()),
                Dimension::Regex(pattern) => {
                    let regex = compile(pattern)?;
                    keys.extend(schema.tags.iter().filter(|k| regex.is_match(k)).cloned());
                }
                Dimension::Time { .. } => {}
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Series matching the tag part of the condition, grouped by GROUP BY tags.
    fn groups(&self, group_tags: &[String], condition_fields: &[String]) -> Result<Vec<Group>> {
        let row_filter = !condition_fields.is_empty();
        let tag_test = |tags: &[(String, String)]| match &self.plan.residual {
            Some(residual) if !row_filter => tag_filter(residual, tags),
            _ => true,
        };
        let mut equal = Vec::new();
        if let Some(residual) = &self.plan.residual {
            required_tags(residual, condition_fields, &mut equal);
        }
        let series = self.source.series_where(
            self.measurement,
            &SeriesFilter {
                equal,
                keep: &tag_test,
            },
        )?;
        let total = self.counters.series.get() + series.len() as u64;
        self.counters.series.set(total);
        if self.limits.max_series > 0 && total > self.limits.max_series {
            return Err(format!(
                "max-select-series limit exceeded: ({total}/{})",
                self.limits.max_series
            ));
        }
        let mut groups: BTreeMap<Vec<String>, Vec<SeriesInfo>> = BTreeMap::new();
        for s in series {
            let key: Vec<String> = group_tags
                .iter()
                .map(|k| {
                    s.tags
                        .iter()
                        .find(|(t, _)| t == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect();
            groups.entry(key).or_default().push(s);
        }
        Ok(groups
            .into_iter()
            .map(|(tag_values, series)| Group { tag_values, series })
            .collect())
    }

    /// Whether the residual condition names fields (then it filters rows).
    fn condition_fields(&self, schema: &Schema) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(residual) = &self.plan.residual {
            let mut refs = Vec::new();
            var_refs(residual, &mut refs);
            for (name, data_type) in refs {
                if data_type != Some(DataType::Tag)
                    && schema.fields.contains_key(name)
                    && !names.iter().any(|n| n == name)
                {
                    names.push(name.to_string());
                }
            }
        }
        names
    }

    /// One field of one series in the query's time range, counted against
    /// the point limit, unless the deadline has passed.
    fn read_limited(&self, series: &SeriesInfo, field: &str) -> Result<Vec<(i64, Value)>> {
        self.read_limited_in(
            series,
            field,
            (self.plan.min_time, self.plan.max_time),
            None,
        )
    }

    fn read_limited_in(
        &self,
        series: &SeriesInfo,
        field: &str,
        (min, max): (i64, i64),
        take: Option<Take>,
    ) -> Result<Vec<(i64, Value)>> {
        if self
            .limits
            .deadline
            .is_some_and(|deadline| std::time::Instant::now() > deadline)
        {
            return Err("query-timeout limit exceeded".into());
        }
        let values = self.source.read_field(series, field, min, max, take)?;
        self.count_points(values.len() as u64)?;
        Ok(values)
    }

    /// Count points read against `max_select_point`.
    fn count_points(&self, points: u64) -> Result<()> {
        let total = self.counters.points.get() + points;
        self.counters.points.set(total);
        if self.limits.max_points > 0 && total > self.limits.max_points {
            return Err(format!(
                "max-select-point limit exceeded: ({total}/{})",
                self.limits.max_points
            ));
        }
        Ok(())
    }

    /// The rows of one series: time -> field values, with the row filter applied.
    /// Rows of a series held elsewhere, filtered by the condition where the
    /// series is (field conditions pushed down); `None`: read them here.
    fn pushed_rows(
        &self,
        series: &SeriesInfo,
        fields: &[String],
        schema: &Schema,
    ) -> Result<Option<Table>> {
        let Some(residual) = &self.plan.residual else {
            return Ok(None);
        };
        let field_names: Vec<String> = schema.fields.keys().cloned().collect();
        let range = (self.plan.min_time, self.plan.max_time);
        let Some(table) = self
            .source
            .rows(series, fields, range, residual, &field_names)?
        else {
            return Ok(None);
        };
        let cells: usize = table
            .values
            .iter()
            .map(|column| column.iter().filter(|v| v.is_some()).count())
            .sum();
        self.count_points(cells as u64)?;
        Ok(Some(table))
    }

    /// The points of the `needed` fields, per field, merged over the
    /// group's series and sorted by (time, member); and each series' rows
    /// as read.
    fn group_points(
        &self,
        series: &[SeriesInfo],
        read_fields: &[String],
        needed: &[String],
        schema: &Schema,
        row_filter: bool,
    ) -> Result<(BTreeMap<String, Vec<Point>>, SeriesRows)> {
        let mut points: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        let mut rows_by_series: SeriesRows = Vec::with_capacity(series.len());
        for (member, one) in series.iter().enumerate() {
            let rows = self.read_rows(one, read_fields, schema, row_filter)?;
            for (time, values) in &rows {
                for (field, value) in values {
                    if needed.contains(field) {
                        points.entry(field.clone()).or_default().push(Point {
                            time: *time,
                            value: cell_of(value),
                            member,
                            feed_seq: 0,
                        });
                    }
                }
            }
            rows_by_series.push(rows);
        }
        for list in points.values_mut() {
            // Per series, in time order, then where InfluxDB would feed each.
            list.sort_by_key(|p| (p.member, p.time));
            let mut times: Vec<Vec<i64>> = vec![Vec::new(); series.len()];
            for point in list.iter() {
                if let Some(member_times) = times.get_mut(point.member) {
                    member_times.push(point.time);
                }
            }
            let mut starts: Vec<usize> = vec![0; series.len() + 1];
            for member in 0..series.len() {
                starts[member + 1] = starts[member] + times[member].len();
            }
            for (seq, (member, index)) in gosort::feed_order(&times).into_iter().enumerate() {
                if let Some(point) = list.get_mut(starts[member] + index) {
                    point.feed_seq = seq;
                }
            }
            list.sort_by_key(|p| (p.time, p.member));
        }
        Ok((points, rows_by_series))
    }

    fn read_rows(
        &self,
        series: &SeriesInfo,
        fields: &[String],
        schema: &Schema,
        row_filter: bool,
    ) -> Result<BTreeMap<i64, BTreeMap<String, Value>>> {
        let mut rows: BTreeMap<i64, BTreeMap<String, Value>> = BTreeMap::new();
        if row_filter {
            if let Some(table) = self.pushed_rows(series, fields, schema)? {
                for (row, time) in table.times.iter().enumerate() {
                    let values = rows.entry(*time).or_default();
                    for field in fields {
                        if let Some(value) = table.value(row, fields, field) {
                            values.insert(field.clone(), value.clone());
                        }
                    }
                }
                return Ok(rows);
            }
        }
        for field in fields {
            let values = self.read_limited(series, field)?;
            for (time, value) in values {
                rows.entry(time).or_default().insert(field.clone(), value);
            }
        }
        if row_filter {
            if let Some(residual) = &self.plan.residual {
                let field_names: BTreeSet<String> = schema.fields.keys().cloned().collect();
                rows.retain(|_, values| {
                    let borrowed: BTreeMap<&str, Value> = values
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect();
                    let scope = RowScope {
                        tags: &series.tags,
                        fields: &borrowed,
                        field_names: &field_names,
                    };
                    matches!(eval(residual, &scope), Some(Val::Bool(true)))
                });
            }
        }
        Ok(rows)
    }

    fn finish(&self, group_tags: &[String], groups: Vec<GroupRows>) -> Vec<ResultSeries> {
        self.finish_limited(group_tags, groups, false)
    }

    /// Series out of rows; `limited` says ORDER BY, OFFSET and LIMIT were
    /// already applied to the rows.
    fn finish_limited(
        &self,
        group_tags: &[String],
        groups: Vec<GroupRows>,
        limited: bool,
    ) -> Vec<ResultSeries> {
        let (limit, offset) = if limited {
            (0, 0)
        } else {
            (
                usize::try_from(self.select.limit).unwrap_or(usize::MAX),
                usize::try_from(self.select.offset).unwrap_or(usize::MAX),
            )
        };
        let mut out = Vec::new();
        for (tag_values, columns, mut rows) in groups {
            if self.select.descending && !limited {
                rows.reverse();
            }
            let values: Vec<Vec<Cell>> = rows
                .into_iter()
                .skip(offset)
                .take(if limit == 0 { usize::MAX } else { limit })
                .collect();
            if values.is_empty() {
                continue;
            }
            let tags = if group_tags.is_empty() {
                None
            } else {
                Some(group_tags.iter().cloned().zip(tag_values).collect())
            };
            out.push(ResultSeries {
                name: Some(self.measurement.to_string()),
                tags,
                columns,
                values,
                partial: false,
            });
        }
        if self.select.descending {
            out.reverse();
        }
        let soffset = usize::try_from(self.select.soffset).unwrap_or(usize::MAX);
        let slimit = usize::try_from(self.select.slimit).unwrap_or(usize::MAX);
        out.into_iter()
            .skip(soffset)
            .take(if slimit == 0 { usize::MAX } else { slimit })
            .collect()
    }

    // ------------------------------------------------------------ raw

    fn raw(&self) -> Result<Vec<ResultSeries>> {
        let schema = self.schema()?;
        let group_tags = self.group_tags(&schema)?;
        let columns = expand_columns(self.select, &schema, &group_tags)?;
        // Fields the output needs; a row exists when one of them has a
        // value (of the type it is cast to, if it is).
        let mut selected: Vec<String> = Vec::new();
        let mut selected_typed: Vec<(String, Option<DataType>)> = Vec::new();
        for column in &columns {
            let mut refs = Vec::new();
            raw_typed_refs(&column.expr, &mut refs);
            for (name, data_type) in refs {
                let is_field = schema.fields.contains_key(name) && !is_tag_ref(&column.expr, name);
                if is_field && !selected.iter().any(|s| s == name) {
                    selected.push(name.to_string());
                }
                if is_field
                    && !selected_typed
                        .iter()
                        .any(|(s, t)| s == name && *t == data_type)
                {
                    selected_typed.push((name.to_string(), data_type));
                }
            }
        }
        if selected.is_empty() {
            return Ok(Vec::new());
        }
        let condition_fields = self.condition_fields(&schema);
        let row_filter = !condition_fields.is_empty();
        let mut needed = selected.clone();
        for name in &condition_fields {
            if !needed.contains(name) {
                needed.push(name.clone());
            }
        }
        let column_names: Vec<String> = std::iter::once("time".to_string())
            .chain(columns.iter().map(|c| c.name.clone()))
            .collect();
        let field_names: BTreeSet<String> = schema.fields.keys().cloned().collect();
        let limit = usize::try_from(self.select.limit).unwrap_or(usize::MAX);
        let offset = usize::try_from(self.select.offset).unwrap_or(usize::MAX);
        let mut groups = Vec::new();
        for group in self.groups(&group_tags, &condition_fields)? {
            // Columnar rows per series; rows are evaluated only once they
            // survive ORDER BY, OFFSET and LIMIT.
            let mut tables: Vec<Table> = Vec::with_capacity(group.series.len());
            let mut candidates: Vec<(i64, usize, usize)> = Vec::new();
            for (member, series) in group.series.iter().enumerate() {
                let pushed = if row_filter {
                    self.pushed_rows(series, &needed, &schema)?
                } else {
                    None
                };
                let table = match pushed {
                    Some(table) => table,
                    None => self.read_table(series, &needed, row_filter)?,
                };
                for row in 0..table.times.len() {
                    if !selected_typed.iter().any(|(f, data_type)| {
                        table
                            .value(row, &needed, f)
                            .is_some_and(|value| cast_value(value, *data_type).is_some())
                    }) {
                        continue;
                    }
                    if row_filter {
                        if let Some(residual) = &self.plan.residual {
                            let fields: BTreeMap<&str, Value> = needed
                                .iter()
                                .filter_map(|f| {
                                    table
                                        .value(row, &needed, f)
                                        .map(|v| (f.as_str(), v.clone()))
                                })
                                .collect();
                            let scope = RowScope {
                                tags: &series.tags,
                                fields: &fields,
                                field_names: &field_names,
                            };
                            if !matches!(eval(residual, &scope), Some(Val::Bool(true))) {
                                continue;
                            }
                        }
                    }
                    candidates.push((table.times[row], member, row));
                }
                tables.push(table);
            }
            candidates.sort_unstable_by_key(|(time, member, _)| (*time, *member));
            if self.select.descending {
                candidates.reverse();
            }
            let take = if limit == 0 { usize::MAX } else { limit };
            let kept = candidates.into_iter().skip(offset).take(take);
            let mut rows = Vec::new();
            for (time, member, row_index) in kept {
                let (Some(series), Some(table)) = (group.series.get(member), tables.get(member))
                else {
                    continue;
                };
                let lookup = |expr: &Expr| -> Option<Cell> {
                    let Expr::VarRef { name, data_type } = expr else {
                        return None;
                    };
                    if *data_type != Some(DataType::Tag) {
                        if let Some(value) = table.value(row_index, &needed, name) {
                            return Some(cast_value(value, *data_type).unwrap_or(Cell::Null));
                        }
                        if schema.fields.contains_key(name) || *data_type == Some(DataType::Field) {
                            return Some(Cell::Null);
                        }
                    }
                    Some(
                        series
                            .tags
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| Cell::String(v.clone()))
                            .unwrap_or(Cell::Null),
                    )
                };
                let mut row = Vec::with_capacity(columns.len() + 1);
                row.push(Cell::Time(time));
                row.extend(columns.iter().map(|column| evaluate(&column.expr, &lookup)));
                rows.push(row);
            }
            groups.push((group.tag_values, column_names.clone(), rows));
        }
        Ok(self.finish_limited(&group_tags, groups, true))
    }

    /// The values of `fields` of one series as columns over the union of
    /// their timestamps.
    ///
    /// With a LIMIT (and no row filter), the first field read bounds the
    /// time range of the others: at least OFFSET+LIMIT rows of this series
    /// lie between that field's cut-off time and the end of the range, so
    /// no row outside it can be returned.
    fn read_table(
        &self,
        series: &SeriesInfo,
        fields: &[String],
        row_filter: bool,
    ) -> Result<Table> {
        let mut columns: Vec<Vec<(i64, Value)>> = Vec::with_capacity(fields.len());
        let wanted = usize::try_from(self.select.limit.saturating_add(self.select.offset))
            .unwrap_or(usize::MAX);
        let mut range = (self.plan.min_time, self.plan.max_time);
        for (index, field) in fields.iter().enumerate() {
            let bounded = index == 0 && self.select.limit > 0 && !row_filter;
            let take = match (bounded, self.select.descending) {
                (false, _) => None,
                (true, true) => Some(Take::Last(wanted)),
                (true, false) => Some(Take::First(wanted)),
            };
            let values = self.read_limited_in(series, field, range, take)?;
            if bounded && values.len() == wanted {
                if let (Some(first), Some(last)) = (values.first(), values.last()) {
                    if self.select.descending {
                        range.0 = first.0;
                    } else {
                        range.1 = last.0;
                    }
                }
            }
            columns.push(values);
        }
        Ok(table_of(columns))
    }

    // ------------------------------------------------------------ aggregates

    fn aggregate(&self) -> Result<Vec<ResultSeries>> {
        let schema = self.schema()?;
        let group_tags = self.group_tags(&schema)?;
        let columns = expand_columns(self.select, &schema, &group_tags)?;
        // The aggregate calls of every column, innermost aggregate first.
        let mut calls: Vec<Expr> = Vec::new();
        for column in &columns {
            collect_aggregate_calls(&column.expr, &mut calls);
        }
        for call in &calls {
            check_call_types(call, &schema)?;
        }
        let mut needed: Vec<String> = Vec::new();
        for call in &calls {
            if let Some(field) = call_field(call) {
                if schema.fields.contains_key(&field) && !needed.contains(&field) {
                    needed.push(field);
                }
            }
        }
        let mut raw_fields: Vec<String> = Vec::new();
        for column in &columns {
            let mut refs = Vec::new();
            raw_refs(&column.expr, &mut refs);
            for name in refs {
                if schema.fields.contains_key(name) && !raw_fields.iter().any(|f| f == name) {
                    raw_fields.push(name.to_string());
                }
            }
        }
        for field in &raw_fields {
            if !needed.contains(field) {
                needed.push(field.clone());
            }
        }
        let condition_fields = self.condition_fields(&schema);
        let row_filter = !condition_fields.is_empty();
        let mut read_fields = needed.clone();
        for name in &condition_fields {
            if !read_fields.contains(name) {
                read_fields.push(name.clone());
            }
        }
        let interval = self.select.dimensions.iter().find_map(|d| match d {
            Dimension::Time { interval, offset } => Some((*interval, offset.unwrap_or(0))),
            _ => None,
        });
        let mut max_time = self.plan.max_time;
        if interval.is_some() && max_time == MAX_NANO_TIME {
            max_time = self.now;
        }
        let column_names: Vec<String> = std::iter::once("time".to_string())
            .chain(columns.iter().map(|c| c.name.clone()))
            .chain(extra_tag_columns(&calls))
            .collect();
        let single_selector = calls.len() == 1
            && columns.len() == 1
            && matches!(&calls[0], Expr::Call { name, .. } if SELECTORS.contains(&name.as_str()))
            || (calls.len() == 1 && !raw_fields.is_empty());
        // Decomposable aggregates stream: each point updates a partial state
        // per window, and no point is kept (these states are also what a
        // replica will send for a coordinator to merge).
        let streaming = raw_fields.is_empty() && !row_filter && calls.iter().all(is_decomposable);
        // In a zone, windows follow InfluxDB's reductions (see `zoned`).
        let grid = match (self.zone, interval) {
            (Some(zone), Some(interval)) => Some(
                zoned::Grid::new(zone, interval, self.select.descending)
                    .ok_or_else(|| "invalid duration".to_string())?,
            ),
            _ => None,
        };
        let mut groups = Vec::new();
        for group in self.groups(&group_tags, &condition_fields)? {
            if let (Some(grid), Some(interval)) = (&grid, interval) {
                let inputs = zoned::Inputs {
                    columns: &columns,
                    calls: &calls,
                    schema: &schema,
                    raw_fields: &raw_fields,
                    needed: &needed,
                    read_fields: &read_fields,
                    row_filter,
                    // spread is reduced once over the points, as InfluxDB does.
                    streaming: streaming && calls.iter().all(zoned::is_pushed_down),
                    interval,
                    range: (self.plan.min_time, max_time),
                };
                if let Some(rows) = self.zoned_rows(grid, &group, &inputs)? {
                    groups.push((group.tag_values, column_names.clone(), rows));
                }
                continue;
            }
            let mut rows_by_series: Vec<BTreeMap<i64, BTreeMap<String, Value>>> = Vec::new();
            // (window start, window end, results, whether the window saw a point)
            let mut computed: Vec<(i64, Vec<Reduced>, bool)> = Vec::new();
            if streaming {
                let partials = self.stream_partials(&group, &calls, interval, &schema)?;
                let first = partials.keys().next().copied();
                for (window_start, _) in windows(interval, self.plan.min_time, max_time, first)? {
                    let states = partials.get(&window_start);
                    let mut results = Vec::with_capacity(calls.len());
                    let mut has_points = false;
                    for (index, call) in calls.iter().enumerate() {
                        let known =
                            call_field(call).is_some_and(|f| schema.fields.contains_key(&f));
                        match states.and_then(|states| states.get(index)) {
                            Some(state) if known && state.count > 0 => {
                                has_points = true;
                                results.push(state.finish(call));
                            }
                            _ => results.push(one(Cell::Null)),
                        }
                    }
                    computed.push((window_start, results, has_points));
                }
            } else {
                let (points, rows) = self.group_points(
                    group.series.as_slice(),
                    &read_fields,
                    &needed,
                    &schema,
                    row_filter,
                )?;
                rows_by_series = rows;
                let first = points
                    .values()
                    .filter_map(|list| list.first().map(|p| p.time))
                    .min();
                for (window_start, window_end) in
                    windows(interval, self.plan.min_time, max_time, first)?
                {
                    let (results, has_points) = reduce_window(
                        &calls,
                        &points,
                        &schema,
                        &group.series,
                        (window_start, window_end),
                    )?;
                    computed.push((window_start, results, has_points));
                }
            }
            let mut rows: Vec<Row> = Vec::new();
            let mut group_has_points = false;
            for (window_start, results, has_points) in computed {
                let stamp = match interval {
                    Some(_) => window_start,
                    None => {
                        if self.plan.min_time == MIN_NANO_TIME {
                            0
                        } else {
                            self.plan.min_time
                        }
                    }
                };
                group_has_points |= has_points;
                rows.extend(self.rows_of_window(
                    &columns,
                    &calls,
                    results,
                    !has_points,
                    stamp,
                    single_selector && interval.is_none(),
                    &raw_fields,
                    &rows_by_series,
                    &group.series,
                ));
            }
            if !group_has_points {
                // A group without a single point in range is no series.
                continue;
            }
            let rows = self.fill(&columns, &calls, rows, interval.map(|(length, _)| length));
            groups.push((group.tag_values, column_names.clone(), rows));
        }
        Ok(self.finish(&group_tags, groups))
    }

    /// Read a group's points and fold them into a partial state per window
    /// and call, keyed by window start.
    fn stream_partials(
        &self,
        group: &Group,
        calls: &[Expr],
        interval: Option<(i64, i64)>,
        schema: &Schema,
    ) -> Result<BTreeMap<i64, Vec<Partial>>> {
        // Sorted by window; each series' windows are merged in one pass.
        let mut partials: Vec<(i64, Vec<Partial>)> = Vec::new();
        self.series_states(group, calls, interval, schema, |_, indexes, own| {
            merge_windows(&mut partials, own, indexes, calls);
        })?;
        Ok(partials.into_iter().collect())
    }

    /// The partial states of each series of a group, one field at a time:
    /// `each(member, indexes of the calls on the field, states by window)`.
    fn series_states(
        &self,
        group: &Group,
        calls: &[Expr],
        interval: Option<(i64, i64)>,
        schema: &Schema,
        mut each: impl FnMut(usize, &[usize], BTreeMap<i64, Vec<Partial>>),
    ) -> Result<()> {
        let mut by_field: Vec<(String, Vec<usize>)> = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            let Some(field) = call_field(call) else {
                continue;
            };
            if !schema.fields.contains_key(&field) {
                continue;
            }
            match by_field.iter_mut().find(|(name, _)| *name == field) {
                Some((_, indexes)) => indexes.push(index),
                None => by_field.push((field, vec![index])),
            }
        }
        // Each series' states are computed alone (here, or by a replica that
        // holds it) and then merged in series order: the same arithmetic
        // whichever node answers.
        let origin = self.plan.min_time;
        for (member, series) in group.series.iter().enumerate() {
            for (field, indexes) in &by_field {
                let range = (self.plan.min_time, self.plan.max_time);
                let shape = PartialShape {
                    calls,
                    indexes,
                    interval,
                    zone: self.zone,
                    descending: self.select.descending,
                    origin,
                    member,
                };
                let own = match self.source.partials(series, field, range, &shape)? {
                    Some((points, own)) => {
                        self.count_points(points)?;
                        own
                    }
                    None => fold_partials(self.read_limited(series, field)?, &shape),
                };
                each(member, indexes, own);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rows_of_window(
        &self,
        columns: &[OutColumn],
        calls: &[Expr],
        results: Vec<Reduced>,
        empty: bool,
        stamp: i64,
        selector_time: bool,
        raw_fields: &[String],
        rows_by_series: &[BTreeMap<i64, BTreeMap<String, Value>>],
        series: &[SeriesInfo],
    ) -> Vec<Row> {
        // A call that yields several rows (distinct, top, bottom, sample) is
        // the only column of its query.
        if let Some(Reduced::Many(items)) = results.first() {
            return items
                .iter()
                .map(|item| {
                    let mut cells = vec![Cell::Time(item.time.unwrap_or(stamp))];
                    cells.push(item.value.clone());
                    cells.extend(item.tags.iter().cloned());
                    Row { cells, empty: None }
                })
                .collect();
        }
        let singles: Vec<(Cell, Option<i64>, Option<usize>)> = results
            .into_iter()
            .map(|result| match result {
                Reduced::One {
                    value,
                    time,
                    member,
                } => (value, time, member),
                Reduced::Many(_) => (Cell::Null, None, None),
            })
            .collect();
        let time = if selector_time {
            singles.first().and_then(|s| s.1).unwrap_or(stamp)
        } else {
            stamp
        };
        let member = singles.first().and_then(|s| s.2);
        let printed: Vec<String> = calls.iter().map(|c| c.to_string()).collect();
        let lookup = |expr: &Expr| -> Option<Cell> {
            if let Expr::Call { name, .. } = expr {
                if is_aggregate(name) {
                    let key = expr.to_string();
                    return printed
                        .iter()
                        .position(|p| *p == key)
                        .map(|i| singles[i].0.clone());
                }
            }
            if let Expr::VarRef { name, .. } = expr {
                if raw_fields.contains(name) {
                    let value = member
                        .and_then(|m| rows_by_series.get(m))
                        .and_then(|rows| rows.get(&time))
                        .and_then(|values| values.get(name))
                        .map(cell_of);
                    return Some(value.unwrap_or(Cell::Null));
                }
                let tag = member
                    .and_then(|m| series.get(m))
                    .and_then(|s| s.tags.iter().find(|(k, _)| k == name))
                    .map(|(_, v)| Cell::String(v.clone()));
                return Some(tag.unwrap_or(Cell::Null));
            }
            None
        };
        let mut row = vec![Cell::Time(time)];
        for column in columns {
            row.push(evaluate(&column.expr, &lookup));
        }
        vec![Row {
            cells: row,
            empty: Some(empty),
        }]
    }

    fn fill(
        &self,
        columns: &[OutColumn],
        calls: &[Expr],
        rows: Vec<Row>,
        interval: Option<i64>,
    ) -> Vec<Vec<Cell>> {
        let by_time = interval.is_some();
        let width = columns.len() + 1;
        if rows.iter().any(|row| row.empty.is_none()) {
            return rows.into_iter().map(|row| row.cells).collect();
        }
        let mut out: Vec<Vec<Cell>> = Vec::with_capacity(rows.len());
        // Which rows of `out` are filled (windows without points).
        let mut filled: Vec<bool> = Vec::with_capacity(rows.len());
        let fill = self.select.fill.clone().unwrap_or(Fill::Null);
        let count_columns: Vec<bool> = columns
            .iter()
            .map(|c| matches!(&c.expr, Expr::Call { name, .. } if name == "count"))
            .collect();
        // A number fills a column in the type of its values (InfluxDB casts
        // the fill value to the call's type); a column without any value
        // by the call.
        let integer_columns: Vec<bool> = columns
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let typed = rows
                    .iter()
                    .filter(|row| row.empty == Some(false))
                    .find_map(|row| match row.cells.get(index + 1) {
                        Some(Cell::Integer(_) | Cell::Unsigned(_)) => Some(true),
                        Some(Cell::Float(_)) => Some(false),
                        _ => None,
                    });
                typed.unwrap_or_else(|| integer_result(&c.expr, calls))
            })
            .collect();
        for Row {
            cells: mut row,
            empty,
        } in rows
        {
            let empty = empty == Some(true);
            if empty && by_time {
                match &fill {
                    Fill::None => continue,
                    Fill::Null => {
                        for (index, is_count) in count_columns.iter().enumerate() {
                            if *is_count {
                                row[index + 1] = Cell::Integer(0);
                            }
                        }
                    }
                    Fill::Number(v) => {
                        for index in 0..columns.len() {
                            row[index + 1] = if integer_columns[index] {
                                Cell::Integer(*v as i64)
                            } else {
                                Cell::Float(*v)
                            };
                        }
                    }
                    Fill::Integer(v) => {
                        for index in 0..columns.len() {
                            row[index + 1] = if integer_columns[index] {
                                Cell::Integer(*v)
                            } else {
                                Cell::Float(*v as f64)
                            };
                        }
                    }
                    Fill::Previous | Fill::Linear => {}
                }
            } else if !by_time && empty {
                // Without GROUP BY time an aggregate over no point is no row.
                continue;
            }
            filled.push(empty);
            out.push(row);
        }
        // As InfluxDB's fill iterator, these run in the query's order: in a
        // descending query the previous value is the later one.
        if let Some(interval) = interval {
            match fill {
                Fill::Previous => previous_fill(&mut out, &filled, width, self.select.descending),
                Fill::Linear => linear_fill(&mut out, width, interval, self.select.descending),
                _ => {}
            }
        }
        out
    }
}

/// The `tag = 'value'` conjuncts of a condition (a series without them
/// cannot match); `fields` are the names the condition uses as fields.
fn required_tags<'a>(condition: &'a Expr, fields: &[String], out: &mut Vec<(&'a str, &'a str)>) {
    match condition {
        Expr::Paren(inner) => required_tags(inner, fields, out),
        Expr::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => {
            required_tags(lhs, fields, out);
            required_tags(rhs, fields, out);
        }
        Expr::Binary {
            op: BinaryOp::Eq,
            lhs,
            rhs,
        } => {
            let pair = match (lhs.as_ref(), rhs.as_ref()) {
                (Expr::VarRef { name, data_type }, Expr::String(value))
                | (Expr::String(value), Expr::VarRef { name, data_type }) => {
                    Some((name, data_type, value))
                }
                _ => None,
            };
            if let Some((name, data_type, value)) = pair {
                // A missing tag compares as '': that is not in the index.
                let is_tag = *data_type == Some(DataType::Tag)
                    || (data_type.is_none() && !fields.contains(name));
                if is_tag && !value.is_empty() {
                    out.push((name.as_str(), value.as_str()));
                }
            }
        }
        _ => {}
    }
}

fn is_tag_ref(expr: &Expr, name: &str) -> bool {
    match expr {
        Expr::VarRef { name: n, data_type } => n == name && *data_type == Some(DataType::Tag),
        _ => false,
    }
}

fn integer_result(expr: &Expr, calls: &[Expr]) -> bool {
    let _ = calls;
    matches!(expr, Expr::Call { name, .. } if name == "count")
        || matches!(expr, Expr::Call { name, args } if matches!(name.as_str(), "max" | "min" | "first" | "last" | "sum" | "spread")
            && !args.is_empty())
}

fn extra_tag_columns(calls: &[Expr]) -> Vec<String> {
    match calls {
        [Expr::Call { name, args }] if name == "top" || name == "bottom" => args
            [1..args.len().saturating_sub(1)]
            .iter()
            .filter_map(|arg| match arg {
                Expr::VarRef { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn collect_aggregate_calls(expr: &Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::Call { name, args } if is_aggregate(name) => {
            if !out.contains(expr) {
                out.push(expr.clone());
            }
            let _ = args;
        }
        Expr::Call { args, .. } => args
            .iter()
            .for_each(|arg| collect_aggregate_calls(arg, out)),
        Expr::Binary { lhs, rhs, .. } => {
            collect_aggregate_calls(lhs, out);
            collect_aggregate_calls(rhs, out);
        }
        Expr::Paren(inner) => collect_aggregate_calls(inner, out),
        _ => {}
    }
}

/// The field an aggregate call reads (through `count(distinct(x))`).
fn call_field(call: &Expr) -> Option<String> {
    match call {
        Expr::Call { args, .. } => match args.first()? {
            Expr::VarRef { name, .. } => Some(name.clone()),
            inner @ Expr::Call { .. } => call_field(inner),
            _ => None,
        },
        _ => None,
    }
}

fn check_call_types(call: &Expr, schema: &Schema) -> Result<()> {
    let Expr::Call { name, .. } = call else {
        return Ok(());
    };
    let Some(field) = call_field(call) else {
        return Err(format!("expected field argument in {name}()"));
    };
    let Some(field_type) = schema.fields.get(&field) else {
        return Ok(());
    };
    let numeric_only = matches!(
        name.as_str(),
        "mean"
            | "median"
            | "stddev"
            | "spread"
            | "sum"
            | "integral"
            | "percentile"
            | "top"
            | "bottom"
    );
    let not_strings = matches!(name.as_str(), "min" | "max");
    let iterator = match field_type {
        FieldType::String => Some("*query.stringInterruptIterator"),
        FieldType::Boolean => Some("*query.booleanInterruptIterator"),
        _ => None,
    };
    match (iterator, field_type) {
        (Some(iterator), FieldType::String) if numeric_only || not_strings => {
            Err(format!("unsupported {name} iterator type: {iterator}"))
        }
        (Some(iterator), FieldType::Boolean) if numeric_only => {
            Err(format!("unsupported {name} iterator type: {iterator}"))
        }
        _ => Ok(()),
    }
}

/// One series' field values as columns over the union of their times.
#[derive(serde::Serialize, serde::Deserialize)]
struct Table {
    times: Vec<i64>,
    /// One column per field, in the order of the fields read.
    values: Vec<Vec<Option<Value>>>,
}

impl Table {
    fn value(&self, row: usize, fields: &[String], field: &str) -> Option<&Value> {
        let column = fields.iter().position(|f| f == field)?;
        self.values.get(column)?.get(row)?.as_ref()
    }
}

/// One output series before limits: (tag values, columns, rows).
type GroupRows = (Vec<String>, Vec<String>, Vec<Vec<Cell>>);

/// Aggregates whose per-window state merges: they stream.
fn is_decomposable(call: &Expr) -> bool {
    match call {
        Expr::Call { name, args } => {
            matches!(
                name.as_str(),
                "count" | "sum" | "mean" | "min" | "max" | "first" | "last" | "spread"
            ) && matches!(args.as_slice(), [Expr::VarRef { .. }])
        }
        _ => false,
    }
}

/// Columns of one series as one table over the union of their timestamps.
fn table_of(columns: Vec<Vec<(i64, Value)>>) -> Table {
    let mut times: Vec<i64> = columns
        .iter()
        .flat_map(|c| c.iter().map(|(t, _)| *t))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut values: Vec<Vec<Option<Value>>> = Vec::with_capacity(columns.len());
    for column in columns {
        let mut out: Vec<Option<Value>> = vec![None; times.len()];
        let mut position = 0;
        for (time, value) in column {
            while position < times.len() && times[position] < time {
                position += 1;
            }
            if let Some(slot) = out.get_mut(position) {
                *slot = Some(value);
            }
        }
        values.push(out);
    }
    Table { times, values }
}

/// A replica's side of filter push-down: the rows of one series it holds
/// (`fields` over `[min, max]`; none for a series it does not know) that
/// satisfy `condition` (InfluxQL text),
/// as msgpack. `tags` and `field_names` are the coordinator's: the series'
/// tags and the measurement's fields.
#[allow(clippy::too_many_arguments)]
pub(crate) fn series_rows(
    storage: &Storage,
    (db, rp): (&str, &str),
    series_id: Option<u64>,
    tags: &[(String, String)],
    fields: &[String],
    (min, max): (i64, i64),
    condition: &str,
    field_names: &[String],
) -> std::result::Result<Vec<u8>, String> {
    let residual = crate::influxql::parser::Parser::new(condition)
        .expr()
        .map_err(|e| e.to_string())?;
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields {
        columns.push(match series_id {
            Some(id) => storage
                .read_field(db, rp, id, field, (min, max), None)
                .map_err(|e| e.to_string())?,
            // A series this replica does not know: no rows.
            None => Vec::new(),
        });
    }
    let table = table_of(columns);
    let names: BTreeSet<String> = field_names.iter().cloned().collect();
    let mut kept = Table {
        times: Vec::new(),
        values: vec![Vec::new(); fields.len()],
    };
    for (row, time) in table.times.iter().enumerate() {
        let values: BTreeMap<&str, Value> = fields
            .iter()
            .filter_map(|f| table.value(row, fields, f).map(|v| (f.as_str(), v.clone())))
            .collect();
        let scope = RowScope {
            tags,
            fields: &values,
            field_names: &names,
        };
        if matches!(eval(&residual, &scope), Some(Val::Bool(true))) {
            kept.times.push(*time);
            for (column, out) in table.values.iter().zip(kept.values.iter_mut()) {
                out.push(column.get(row).cloned().flatten());
            }
        }
    }
    rmp_serde::to_vec(&kept).map_err(|e| e.to_string())
}

/// What the partial states of one field of one series are for: the
/// query's calls (only `indexes` read this field), its GROUP BY time, where
/// windows start without one, and the series' place in its group (for ties).
pub(crate) struct PartialShape<'a> {
    calls: &'a [Expr],
    indexes: &'a [usize],
    interval: Option<(i64, i64)>,
    /// `tz()` (not UTC): windows follow its local time, and depend on the
    /// order the query reads points in.
    zone: Option<&'a Zone>,
    descending: bool,
    origin: i64,
    member: usize,
}

/// Fold points (in time order) into per-window states.
fn fold_partials(
    values: Vec<(i64, Value)>,
    shape: &PartialShape<'_>,
) -> BTreeMap<i64, Vec<Partial>> {
    if let (Some(interval), Some(zone)) = (shape.interval, shape.zone) {
        if let Some(grid) = zoned::Grid::new(zone, interval, shape.descending) {
            return zoned::fold_partials(&grid, values, shape);
        }
    }
    // Windows come in ascending order: a vector, then a map built in bulk.
    let mut partials: Vec<(i64, Vec<Partial>)> = Vec::new();
    let window_of = |time: i64| match shape.interval {
        Some((length, offset)) => (time - offset).div_euclid(length) * length + offset,
        None => shape.origin,
    };
    // Points come in time order: each window's points are one run.
    let mut rest = values.as_slice();
    while let Some(&(time, _)) = rest.first() {
        let start = window_of(time);
        // The window's points: up to its end (no division per point).
        let end = match shape
            .interval
            .and_then(|(length, _)| start.checked_add(length))
        {
            Some(window_end) => rest
                .iter()
                .position(|(time, _)| *time >= window_end)
                .unwrap_or(rest.len()),
            None => rest.len(),
        };
        let (run, tail) = rest.split_at(end.max(1));
        rest = tail;
        partials.push((start, shape.calls.iter().map(Partial::for_call).collect()));
        let Some((_, states)) = partials.last_mut() else {
            break;
        };
        for &index in shape.indexes {
            if let Some(state) = states.get_mut(index) {
                state.add_run(run, shape.member);
            }
        }
    }
    if partials.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return partials.into_iter().collect();
    }
    // Not in time order after all: merge the states of equal windows.
    let mut merged: BTreeMap<i64, Vec<Partial>> = BTreeMap::new();
    for (start, states) in partials {
        match merged.entry(start) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(states);
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                for (kept, other) in entry.get_mut().iter_mut().zip(&states) {
                    kept.merge(other);
                }
            }
        }
    }
    merged
}

/// Merge one series' per-window states (at `indexes`) into a group's,
/// both sorted by window start: one pass, new windows added in order.
fn merge_windows(
    into: &mut Vec<(i64, Vec<Partial>)>,
    own: BTreeMap<i64, Vec<Partial>>,
    indexes: &[usize],
    calls: &[Expr],
) {
    let mut added: Vec<(i64, Vec<Partial>)> = Vec::new();
    let mut at = 0;
    for (window, states) in own {
        while into.get(at).is_some_and(|(start, _)| *start < window) {
            at += 1;
        }
        let target = match into.get_mut(at) {
            Some((start, target)) if *start == window => target,
            _ => {
                added.push((window, calls.iter().map(Partial::for_call).collect()));
                match added.last_mut() {
                    Some((_, target)) => target,
                    None => continue,
                }
            }
        };
        for &index in indexes {
            if let (Some(kept), Some(from)) = (target.get_mut(index), states.get(index)) {
                kept.merge(from);
            }
        }
    }
    if !added.is_empty() {
        into.append(&mut added);
        into.sort_by_key(|(start, _)| *start);
    }
}

/// The indexes of the smallest and the largest of `values` (the first of
/// equal ones).
fn extremes<T: Copy>(
    values: impl Iterator<Item = T>,
    compare: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> (usize, usize) {
    let mut low: Option<(usize, T)> = None;
    let mut high: Option<(usize, T)> = None;
    for (index, value) in values.enumerate() {
        if low.is_none_or(|(_, kept)| compare(&value, &kept).is_lt()) {
            low = Some((index, value));
        }
        if high.is_none_or(|(_, kept)| compare(&value, &kept).is_gt()) {
            high = Some((index, value));
        }
    }
    (low.map_or(0, |(i, _)| i), high.map_or(0, |(i, _)| i))
}

/// The wire form of one series' partial states: (window start, states).
type WirePartials = Vec<(i64, Vec<Partial>)>;

/// Per-window states, and the number of points they cover.
type CountedPartials = (u64, BTreeMap<i64, Vec<Partial>>);

/// A replica's side of aggregate push-down: the partial states of one field
/// of one series it holds, as msgpack, and how many points they cover.
#[allow(clippy::too_many_arguments)]
pub(crate) fn series_partials(
    storage: &Storage,
    (db, rp): (&str, &str),
    series_id: u64,
    field: &str,
    call_names: &[String],
    indexes: &[usize],
    (interval, zone, descending): (Option<(i64, i64)>, Option<&str>, bool),
    (min, max, origin): (i64, i64, i64),
    member: usize,
) -> std::result::Result<(u64, Vec<u8>), String> {
    let zone = match zone {
        Some(name) => {
            Some(Zone::load(name).ok_or_else(|| format!("unable to find time zone {name}"))?)
        }
        None => None,
    };
    let calls: Vec<Expr> = call_names
        .iter()
        .map(|name| Expr::Call {
            name: name.clone(),
            args: Vec::new(),
        })
        .collect();
    let values = storage
        .read_field(db, rp, series_id, field, (min, max), None)
        .map_err(|e| e.to_string())?;
    let points = values.len() as u64;
    let shape = PartialShape {
        calls: &calls,
        indexes,
        interval,
        zone: zone.as_ref(),
        descending,
        origin,
        member,
    };
    let wire: WirePartials = fold_partials(values, &shape).into_iter().collect();
    let bytes = rmp_serde::to_vec(&wire).map_err(|e| e.to_string())?;
    Ok((points, bytes))
}

/// The partial state of a decomposable aggregate over some points: it can
/// take points in any order and merge with another state of the same window.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Partial {
    count: u64,
    float_sum: f64,
    int_sum: i64,
    all_integers: bool,
    min: Option<(Cell, i64, usize)>,
    max: Option<(Cell, i64, usize)>,
    first: Option<(Cell, i64, usize)>,
    last: Option<(Cell, i64, usize)>,
    /// What the call needs: the rest is not tracked.
    wants: Wants,
}

/// The parts of a [`Partial`] a call reads.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Wants {
    sums: bool,
    min: bool,
    max: bool,
    first: bool,
    last: bool,
}

impl Default for Partial {
    fn default() -> Self {
        Partial::with(Wants {
            sums: true,
            min: true,
            max: true,
            first: true,
            last: true,
        })
    }
}

impl Partial {
    fn with(wants: Wants) -> Partial {
        Partial {
            count: 0,
            float_sum: 0.0,
            int_sum: 0,
            all_integers: true,
            min: None,
            max: None,
            first: None,
            last: None,
            wants,
        }
    }

    /// A state that tracks only what `call` needs.
    fn for_call(call: &Expr) -> Partial {
        let name = match call {
            Expr::Call { name, .. } => name.as_str(),
            _ => "",
        };
        match name {
            "count" | "sum" | "mean" | "min" | "max" | "first" | "last" | "spread" => {
                Partial::with(Wants {
                    sums: matches!(name, "sum" | "mean"),
                    min: matches!(name, "min" | "spread"),
                    max: matches!(name, "max" | "spread"),
                    first: name == "first",
                    last: name == "last",
                })
            }
            _ => Partial::default(),
        }
    }

    fn add(&mut self, value: &Cell, time: i64, member: usize) {
        self.merge_point((value.clone(), time, member));
    }

    /// Add one series' points of one window, in time order: the same state
    /// as adding them one by one, but with typed loops for float and
    /// integer columns and one copy per kept point instead of one per point.
    fn add_run(&mut self, run: &[(i64, Value)], member: usize) {
        if run.is_empty() {
            return;
        }
        let float = |value: &Value| match value {
            Value::Float(v) => Some(*v),
            _ => None,
        };
        let integer = |value: &Value| match value {
            Value::Integer(v) => Some(*v),
            _ => None,
        };
        // Index of the kept minimum and maximum: the earliest on ties.
        let (low, high) = if run.iter().all(|(_, value)| float(value).is_some()) {
            let values = run.iter().filter_map(|(_, value)| float(value));
            if self.wants.sums {
                self.all_integers = false;
                for v in values.clone() {
                    self.float_sum += v;
                }
            }
            extremes(values, |a, b| a.total_cmp(b))
        } else if run.iter().all(|(_, value)| integer(value).is_some()) {
            let values = run.iter().filter_map(|(_, value)| integer(value));
            if self.wants.sums {
                for v in values.clone() {
                    self.int_sum = self.int_sum.wrapping_add(v);
                    self.float_sum += v as f64;
                }
            }
            extremes(values, |a, b| a.cmp(b))
        } else {
            for (time, value) in run {
                self.add(&cell_of(value), *time, member);
            }
            return;
        };
        self.count += run.len() as u64;
        let point = |index: usize| {
            run.get(index)
                .map(|(time, value)| (cell_of(value), *time, member))
        };
        // The run's own minimum, maximum, first and last, as wanted; no
        // allocation per window.
        let wants = self.wants;
        for (wanted, index) in [
            (wants.min, low),
            (wants.max, high),
            (wants.first, 0),
            (wants.last, run.len() - 1),
        ] {
            if !wanted {
                continue;
            }
            if let Some(candidate) = point(index) {
                self.select(candidate);
            }
        }
    }

    fn merge_point(&mut self, point: (Cell, i64, usize)) {
        self.count += 1;
        if self.wants.sums {
            match &point.0 {
                Cell::Integer(v) => {
                    self.int_sum = self.int_sum.wrapping_add(*v);
                    self.float_sum += *v as f64;
                }
                other => {
                    self.all_integers = false;
                    if let Some(v) = as_f64(other) {
                        self.float_sum += v;
                    }
                }
            }
        }
        self.select(point);
    }

    /// Keep `point` as the minimum, maximum, first or last where it is
    /// one (counts and sums aside).
    fn select(&mut self, point: (Cell, i64, usize)) {
        use std::cmp::Ordering;
        let wants = self.wants;
        let earlier = |a: &(Cell, i64, usize), b: &(Cell, i64, usize)| (a.1, a.2) < (b.1, b.2);
        let better_min = wants.min
            && self
                .min
                .as_ref()
                .is_none_or(|current| match compare_values(&point.0, &current.0) {
                    Ordering::Less => true,
                    Ordering::Equal => earlier(&point, current),
                    Ordering::Greater => false,
                });
        if better_min {
            self.min = Some(point.clone());
        }
        let better_max = wants.max
            && self
                .max
                .as_ref()
                .is_none_or(|current| match compare_values(&point.0, &current.0) {
                    Ordering::Greater => true,
                    Ordering::Equal => earlier(&point, current),
                    Ordering::Less => false,
                });
        if better_max {
            self.max = Some(point.clone());
        }
        if wants.first
            && self
                .first
                .as_ref()
                .is_none_or(|current| earlier(&point, current))
        {
            self.first = Some(point.clone());
        }
        let later = wants.last
            && self.last.as_ref().is_none_or(|current| {
                point.1 > current.1 || (point.1 == current.1 && point.2 < current.2)
            });
        if later {
            self.last = Some(point);
        }
    }

    /// Fold another state of the same window into this one (another
    /// series', or a replica's).
    fn merge(&mut self, other: &Partial) {
        self.count += other.count;
        self.float_sum += other.float_sum;
        self.int_sum = self.int_sum.wrapping_add(other.int_sum);
        self.all_integers &= other.all_integers;
        for point in [&other.min, &other.max, &other.first, &other.last]
            .into_iter()
            .flatten()
        {
            self.select(point.clone());
        }
    }

    fn finish(&self, call: &Expr) -> Reduced {
        let Expr::Call { name, .. } = call else {
            return one(Cell::Null);
        };
        let pick = |point: &Option<(Cell, i64, usize)>| match point {
            Some((value, time, member)) => Reduced::One {
                value: value.clone(),
                time: Some(*time),
                member: Some(*member),
            },
            None => one(Cell::Null),
        };
        match name.as_str() {
            "count" => one(Cell::Integer(self.count as i64)),
            "sum" if self.all_integers => one(Cell::Integer(self.int_sum)),
            "sum" => one(Cell::Float(self.float_sum)),
            "mean" => one(Cell::Float(self.float_sum / self.count.max(1) as f64)),
            "min" => pick(&self.min),
            "max" => pick(&self.max),
            "first" => pick(&self.first),
            "last" => pick(&self.last),
            "spread" => match (&self.min, &self.max) {
                (Some((Cell::Integer(a), _, _)), Some((Cell::Integer(b), _, _))) => {
                    one(Cell::Integer(b.wrapping_sub(*a)))
                }
                (Some((a, _, _)), Some((b, _, _))) => match (as_f64(a), as_f64(b)) {
                    (Some(a), Some(b)) => one(Cell::Float(b - a)),
                    _ => one(Cell::Null),
                },
                _ => one(Cell::Null),
            },
            _ => one(Cell::Null),
        }
    }
}

/// An output row of an aggregate query; `empty` says whether every
/// aggregate of its window saw no point (`None` for multi-row calls).
struct Row {
    cells: Vec<Cell>,
    empty: Option<bool>,
}

#[derive(Debug, Clone)]
struct Point {
    time: i64,
    value: Cell,
    member: usize,
    /// Where InfluxDB feeds this point to `mode()` and `percentile()`
    /// among the group's points (see `gosort::feed_order`).
    feed_seq: usize,
}

#[derive(Clone)]
struct Item {
    time: Option<i64>,
    value: Cell,
    tags: Vec<Cell>,
}

#[derive(Clone)]
enum Reduced {
    One {
        value: Cell,
        time: Option<i64>,
        member: Option<usize>,
    },
    Many(Vec<Item>),
}

fn one(value: Cell) -> Reduced {
    Reduced::One {
        value,
        time: None,
        member: None,
    }
}

fn selected(point: &Point) -> Reduced {
    Reduced::One {
        value: point.value.clone(),
        time: Some(point.time),
        member: Some(point.member),
    }
}

fn number_arg(args: &[Expr], index: usize) -> Option<f64> {
    match args.get(index)? {
        Expr::Integer(v) => Some(*v as f64),
        Expr::Number(v) => Some(*v),
        Expr::Duration(v) => Some(*v as f64),
        _ => None,
    }
}

/// Each series' rows: time -> field -> value.
type SeriesRows = Vec<BTreeMap<i64, BTreeMap<String, Value>>>;

/// Each call reduced over its field's points in `[start, end)` (points
/// sorted by time per field), and whether a known field had a point there.
fn reduce_window(
    calls: &[Expr],
    points: &BTreeMap<String, Vec<Point>>,
    schema: &Schema,
    series: &[SeriesInfo],
    (start, end): (i64, i64),
) -> Result<(Vec<Reduced>, bool)> {
    let mut results = Vec::with_capacity(calls.len());
    let mut has_points = false;
    for call in calls {
        let field = call_field(call).unwrap_or_default();
        let in_window: &[Point] = points
            .get(&field)
            .map(|list| {
                let from = list.partition_point(|p| p.time < start);
                let to = list.partition_point(|p| p.time < end);
                &list[from..to]
            })
            .unwrap_or(&[]);
        let known = schema.fields.contains_key(&field);
        has_points |= known && !in_window.is_empty();
        results.push(reduce(call, in_window, known, series)?);
    }
    Ok((results, has_points))
}

/// `a < b` as InfluxDB's sorts by value compare.
fn value_less(a: &Cell, b: &Cell) -> bool {
    match (as_f64(a), as_f64(b)) {
        (Some(x), Some(y)) if !matches!((a, b), (Cell::Integer(_), Cell::Integer(_))) => x < y,
        _ => compare_values(a, b) == std::cmp::Ordering::Less,
    }
}

/// InfluxDB 1.6's `mode()`: the values sorted (its unstable sort), then the
/// longest run; between runs of one length the one whose first point (in
/// sorted order) is not later than the time kept so far wins, and a run of
/// one point after the first counts for nothing. For booleans, true unless
/// false is strictly more frequent.
fn mode(points: &[Point]) -> Cell {
    let Some(first) = points.first() else {
        return Cell::Null;
    };
    if points.len() == 1 {
        return first.value.clone();
    }
    if matches!(first.value, Cell::Boolean(_)) {
        let trues = points
            .iter()
            .filter(|p| matches!(p.value, Cell::Boolean(true)))
            .count();
        return Cell::Boolean(trues >= points.len() - trues);
    }
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|p| p.feed_seq);
    gosort::sort_by(&mut sorted, |a, b| value_less(&a.value, &b.value));
    let (mut most_freq, mut curr_freq) = (0usize, 0usize);
    let mut curr_mode = &sorted[0].value;
    let mut most_mode = curr_mode;
    let (mut most_time, mut curr_time) = (sorted[0].time, sorted[0].time);
    for point in &sorted {
        if point.value != *curr_mode {
            curr_freq = 1;
            curr_mode = &point.value;
            curr_time = point.time;
            continue;
        }
        curr_freq += 1;
        if most_freq > curr_freq || (most_freq == curr_freq && curr_time > most_time) {
            continue;
        }
        most_freq = curr_freq;
        most_mode = &point.value;
        most_time = point.time;
    }
    most_mode.clone()
}

fn compare_values(a: &Cell, b: &Cell) -> std::cmp::Ordering {
    match (a, b) {
        (Cell::Integer(x), Cell::Integer(y)) => x.cmp(y),
        (Cell::Unsigned(x), Cell::Unsigned(y)) => x.cmp(y),
        (Cell::Boolean(x), Cell::Boolean(y)) => x.cmp(y),
        (Cell::String(x), Cell::String(y)) => x.cmp(y),
        _ => as_f64(a)
            .unwrap_or(f64::NAN)
            .total_cmp(&as_f64(b).unwrap_or(f64::NAN)),
    }
}

fn reduce(
    call: &Expr,
    points: &[Point],
    known_field: bool,
    series: &[SeriesInfo],
) -> Result<Reduced> {
    let Expr::Call { name, args } = call else {
        return Ok(one(Cell::Null));
    };
    if !known_field {
        return Ok(one(Cell::Null));
    }
    let numbers = || {
        points
            .iter()
            .filter_map(|p| as_f64(&p.value))
            .collect::<Vec<f64>>()
    };
    let all_integers =
        !points.is_empty() && points.iter().all(|p| matches!(p.value, Cell::Integer(_)));
    Ok(match name.as_str() {
        "count" => {
            if let Some(Expr::Call { name: inner, .. }) = args.first() {
                if inner == "distinct" {
                    let mut seen: Vec<&Cell> = Vec::new();
                    for point in points {
                        if !seen.contains(&&point.value) {
                            seen.push(&point.value);
                        }
                    }
                    return Ok(one(Cell::Integer(seen.len() as i64)));
                }
            }
            if points.is_empty() {
                one(Cell::Null)
            } else {
                one(Cell::Integer(points.len() as i64))
            }
        }
        "sum" => {
            if points.is_empty() {
                one(Cell::Null)
            } else if all_integers {
                one(Cell::Integer(
                    points
                        .iter()
                        .map(|p| if let Cell::Integer(v) = p.value { v } else { 0 })
                        .fold(0i64, i64::wrapping_add),
                ))
            } else {
                one(Cell::Float(numbers().iter().sum()))
            }
        }
        "mean" => {
            let values = numbers();
            if values.is_empty() {
                one(Cell::Null)
            } else {
                one(Cell::Float(
                    values.iter().sum::<f64>() / values.len() as f64,
                ))
            }
        }
        "median" => {
            let mut values = numbers();
            if values.is_empty() {
                one(Cell::Null)
            } else {
                values.sort_by(f64::total_cmp);
                let middle = values.len() / 2;
                if values.len() % 2 == 0 {
                    one(Cell::Float((values[middle - 1] + values[middle]) / 2.0))
                } else {
                    one(Cell::Float(values[middle]))
                }
            }
        }
        "mode" => one(mode(points)),
        "spread" => {
            if points.is_empty() {
                one(Cell::Null)
            } else if all_integers {
                let values: Vec<i64> = points
                    .iter()
                    .filter_map(|p| {
                        if let Cell::Integer(v) = p.value {
                            Some(v)
                        } else {
                            None
                        }
                    })
                    .collect();
                let (min, max) = (
                    values.iter().min().copied().unwrap_or(0),
                    values.iter().max().copied().unwrap_or(0),
                );
                one(Cell::Integer(max.wrapping_sub(min)))
            } else {
                let values = numbers();
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                one(Cell::Float(max - min))
            }
        }
        "stddev" => {
            let values = numbers();
            if values.len() < 2 {
                one(Cell::Null)
            } else {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / (values.len() - 1) as f64;
                one(Cell::Float(variance.sqrt()))
            }
        }
        "first" => points
            .iter()
            .min_by_key(|p| p.time)
            .map(selected)
            .unwrap_or_else(|| one(Cell::Null)),
        "last" => points
            .iter()
            .rev()
            .max_by_key(|p| p.time)
            .map(selected)
            .unwrap_or_else(|| one(Cell::Null)),
        "max" => points
            .iter()
            .reduce(|best, p| {
                if compare_values(&p.value, &best.value) == std::cmp::Ordering::Greater {
                    p
                } else {
                    best
                }
            })
            .map(selected)
            .unwrap_or_else(|| one(Cell::Null)),
        "min" => points
            .iter()
            .reduce(|best, p| {
                if compare_values(&p.value, &best.value) == std::cmp::Ordering::Less {
                    p
                } else {
                    best
                }
            })
            .map(selected)
            .unwrap_or_else(|| one(Cell::Null)),
        "percentile" => {
            let percentile =
                number_arg(args, 1).ok_or("expected float argument in percentile()")?;
            let mut sorted: Vec<&Point> = points.iter().collect();
            sorted.sort_by_key(|p| p.feed_seq);
            // InfluxDB's sort (not stable): which of equal values, and so
            // which time, lands at the index.
            gosort::sort_by(&mut sorted, |a, b| value_less(&a.value, &b.value));
            let index = (sorted.len() as f64 * percentile / 100.0 + 0.5).floor() as i64 - 1;
            if index < 0 || index as usize >= sorted.len() {
                one(Cell::Null)
            } else {
                selected(sorted[index as usize])
            }
        }
        "distinct" => {
            let mut seen: Vec<Cell> = Vec::new();
            for point in points {
                if !seen.contains(&point.value) {
                    seen.push(point.value.clone());
                }
            }
            Reduced::Many(
                seen.into_iter()
                    .map(|value| Item {
                        time: None,
                        value,
                        tags: Vec::new(),
                    })
                    .collect(),
            )
        }
        "top" | "bottom" => {
            let limit = number_arg(args, args.len() - 1)
                .ok_or(format!("expected integer as last argument in {name}()"))?;
            let limit = limit.max(0.0) as usize;
            let tag_names: Vec<String> = args[1..args.len() - 1]
                .iter()
                .filter_map(|arg| match arg {
                    Expr::VarRef { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            let tag_of = |point: &Point, tag: &str| -> Cell {
                series
                    .get(point.member)
                    .and_then(|s| s.tags.iter().find(|(k, _)| k == tag))
                    .map(|(_, v)| Cell::String(v.clone()))
                    .unwrap_or(Cell::Null)
            };
            let better = |a: &Point, b: &Point| -> std::cmp::Ordering {
                let ordering = compare_values(&b.value, &a.value);
                let ordering = if name == "bottom" {
                    ordering.reverse()
                } else {
                    ordering
                };
                ordering.then(a.time.cmp(&b.time))
            };
            let mut candidates: Vec<&Point> = points.iter().collect();
            candidates.sort_by(|a, b| better(a, b));
            if !tag_names.is_empty() {
                let mut seen: Vec<Vec<Cell>> = Vec::new();
                candidates.retain(|point| {
                    let key: Vec<Cell> = tag_names.iter().map(|t| tag_of(point, t)).collect();
                    if seen.contains(&key) {
                        false
                    } else {
                        seen.push(key);
                        true
                    }
                });
            }
            candidates.truncate(limit);
            candidates.sort_by_key(|p| (p.time, p.member));
            Reduced::Many(
                candidates
                    .into_iter()
                    .map(|point| Item {
                        time: Some(point.time),
                        value: point.value.clone(),
                        tags: tag_names.iter().map(|t| tag_of(point, t)).collect(),
                    })
                    .collect(),
            )
        }
        "integral" => {
            let unit = number_arg(args, 1).unwrap_or(1e9);
            if points.is_empty() {
                one(Cell::Null)
            } else {
                let mut area = 0.0;
                for pair in points.windows(2) {
                    if let (Some(a), Some(b)) = (as_f64(&pair[0].value), as_f64(&pair[1].value)) {
                        area += (a + b) / 2.0 * (pair[1].time - pair[0].time) as f64 / unit;
                    }
                }
                one(Cell::Float(area))
            }
        }
        "sample" => {
            // InfluxDB keeps N points chosen uniformly at random (reservoir
            // sampling), returned in time order.
            let size = number_arg(args, 1)
                .filter(|n| n.fract() == 0.0)
                .ok_or("expected integer argument in sample()")?;
            if size < 1.0 {
                return Err(format!("sample window must be greater than 1, got {size}"));
            }
            let mut chosen: Vec<&Point> = points
                .iter()
                .choose_multiple(&mut rand::thread_rng(), size as usize);
            chosen.sort_by_key(|p| (p.time, p.member));
            Reduced::Many(
                chosen
                    .into_iter()
                    .map(|point| Item {
                        time: Some(point.time),
                        value: point.value.clone(),
                        tags: Vec::new(),
                    })
                    .collect(),
            )
        }
        other => return Err(format!("unsupported call: {other}")),
    })
}

/// The windows to compute: GROUP BY time windows from the one holding the
/// lower bound (or the first point) to the one holding the upper bound; or
/// one window for the whole range.
fn windows(
    interval: Option<(i64, i64)>,
    min: i64,
    max: i64,
    first_point: Option<i64>,
) -> Result<Vec<(i64, i64)>> {
    let Some((interval, offset)) = interval else {
        return Ok(vec![(min, max.saturating_add(1))]);
    };
    if interval <= 0 {
        return Err("invalid duration".into());
    }
    let first = if min == MIN_NANO_TIME {
        match first_point {
            Some(time) => time,
            None => return Ok(Vec::new()),
        }
    } else {
        min
    };
    let align = |t: i64| (t - offset).div_euclid(interval) * interval + offset;
    let start = align(first);
    let end = align(max);
    if (end - start) / interval > MAX_BUCKETS {
        return Err(format!(
            "too many buckets in GROUP BY time: more than {MAX_BUCKETS} per series"
        ));
    }
    let mut out = Vec::new();
    let mut window = start;
    while window <= end {
        out.push((window, window + interval));
        window += interval;
    }
    Ok(out)
}

/// `fill(previous)`: a filled row takes the values of the last row with
/// points before it, in the query's order.
fn previous_fill(rows: &mut [Vec<Cell>], filled: &[bool], width: usize, descending: bool) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    if descending {
        order.reverse();
    }
    let mut last: Option<usize> = None;
    for index in order {
        if !filled.get(index).copied().unwrap_or(false) {
            last = Some(index);
            continue;
        }
        if let Some(source) = last {
            let values: Vec<Cell> = rows[source][1..width].to_vec();
            rows[index][1..width].clone_from_slice(&values);
        }
    }
}

/// `fill(linear)`, as InfluxDB's fill iterator computes it: on the window
/// times divided by the interval, from the previous value with points (in
/// the query's order) towards the next; an integer column stays integer
/// (truncated).
fn linear_fill(rows: &mut [Vec<Cell>], width: usize, interval: i64, descending: bool) {
    let interval = interval.max(1);
    for column in 1..width {
        let known: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| {
                matches!(
                    row[column],
                    Cell::Float(_) | Cell::Integer(_) | Cell::Unsigned(_)
                )
            })
            .map(|(index, _)| index)
            .collect();
        for pair in known.windows(2) {
            let (previous, next) = if descending {
                (pair[1], pair[0])
            } else {
                (pair[0], pair[1])
            };
            let (Cell::Time(previous_time), Cell::Time(next_time)) =
                (&rows[previous][0], &rows[next][0])
            else {
                continue;
            };
            let (previous_time, next_time) = (previous_time / interval, next_time / interval);
            let (previous_value, next_value) =
                (rows[previous][column].clone(), rows[next][column].clone());
            for row in rows.iter_mut().take(pair[1]).skip(pair[0] + 1) {
                let Cell::Time(time) = row[0] else {
                    continue;
                };
                row[column] = linear(
                    time / interval,
                    (previous_time, next_time),
                    &previous_value,
                    &next_value,
                );
            }
        }
    }
}

/// InfluxDB's `linearFloat`/`linearInteger`/`linearUnsigned`.
fn linear(
    window: i64,
    (previous_time, next_time): (i64, i64),
    previous: &Cell,
    next: &Cell,
) -> Cell {
    let span = next_time.wrapping_sub(previous_time) as f64;
    let x = window.wrapping_sub(previous_time) as f64;
    match (previous, next) {
        (Cell::Integer(a), Cell::Integer(b)) => {
            let m = b.wrapping_sub(*a) as f64 / span;
            Cell::Integer((m * x + *a as f64) as i64)
        }
        (Cell::Unsigned(a), Cell::Unsigned(b)) => {
            let m = b.wrapping_sub(*a) as f64 / span;
            Cell::Unsigned((m * x + *a as f64) as u64)
        }
        _ => match (as_f64(previous), as_f64(next)) {
            (Some(a), Some(b)) => {
                let m = (b - a) / span;
                Cell::Float(m * x + a)
            }
            _ => Cell::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> Expr {
        Expr::Call {
            name: name.into(),
            args: vec![Expr::VarRef {
                name: "v".into(),
                data_type: None,
            }],
        }
    }

    fn value(reduced: Reduced) -> (Cell, Option<i64>) {
        match reduced {
            Reduced::One { value, time, .. } => (value, time),
            Reduced::Many(_) => (Cell::Null, None),
        }
    }

    fn state_of(partial: &Partial) -> String {
        // Every field, floats by their bits.
        format!(
            "{} {} {} {} {:?} {:?} {:?} {:?}",
            partial.count,
            partial.float_sum.to_bits(),
            partial.int_sum,
            partial.all_integers,
            partial.min,
            partial.max,
            partial.first,
            partial.last
        )
    }

    proptest::proptest! {
        /// A run of points added at once is the state of adding them one
        /// by one: counts, sums to the bit, and which point is the min,
        /// max (the earliest on ties), first and last; for float, integer
        /// and mixed runs, and on a state that already holds points.
        #[test]
        fn add_run_is_adding_point_by_point(
            values in proptest::collection::vec(-3i64..3, 1..40),
            kind in 0u8..3,
            before in proptest::option::of((-3i64..3, 0i64..100)),
        ) {
            let run: Vec<(i64, Value)> = values
                .iter()
                .enumerate()
                .map(|(index, v)| {
                    let value = match kind {
                        0 => Value::Float(*v as f64 * 0.1),
                        1 => Value::Integer(*v),
                        _ if index % 2 == 0 => Value::Float(*v as f64),
                        _ => Value::Integer(*v),
                    };
                    (index as i64 * 10, value)
                })
                .collect();
            for name in ["count", "sum", "mean", "min", "max", "first", "last", "spread", "median"] {
                let mut one_by_one = Partial::for_call(&call(name));
                if let Some((v, t)) = before {
                    one_by_one.add(&Cell::Integer(v), t, 1);
                }
                let mut at_once = one_by_one.clone();
                for (time, value) in &run {
                    one_by_one.add(&cell_of(value), *time, 0);
                }
                at_once.add_run(&run, 0);
                proptest::prop_assert_eq!(state_of(&at_once), state_of(&one_by_one), "{}", name);
            }
        }
    }

    #[test]
    fn partial_states_merge_to_the_same_answer_as_one_pass() {
        let points = [
            (Cell::Integer(5), 30),
            (Cell::Integer(-2), 10),
            (Cell::Integer(9), 20),
            (Cell::Integer(9), 40),
        ];
        let mut whole = Partial::default();
        let (mut left, mut right) = (Partial::default(), Partial::default());
        for (index, (cell, time)) in points.iter().enumerate() {
            whole.add(cell, *time, 0);
            if index % 2 == 0 {
                left.add(cell, *time, 0)
            } else {
                right.add(cell, *time, 0)
            }
        }
        left.merge(&right);
        for name in [
            "count", "sum", "mean", "min", "max", "first", "last", "spread",
        ] {
            assert_eq!(
                value(left.finish(&call(name))),
                value(whole.finish(&call(name))),
                "{name}"
            );
        }
        assert_eq!(
            value(whole.finish(&call("max"))),
            (Cell::Integer(9), Some(20))
        );
        assert_eq!(
            value(whole.finish(&call("first"))),
            (Cell::Integer(-2), Some(10))
        );
        assert_eq!(
            value(whole.finish(&call("spread"))),
            (Cell::Integer(11), None)
        );
    }
}
