//! Queries with transformations (`derivative`, `difference`,
//! `moving_average`, …), computed as InfluxDB 1.6 computes them.
//!
//! Every call the select list names at its top level (an aggregate, or a
//! transformation of a raw field or of an aggregate) is a stream of points of
//! its own, per output series:
//! - a raw field is the points of that field over the series of the group,
//!   merged by time in the query's order (points of one time in the order
//!   InfluxDB's merge heap gives them);
//! - an aggregate is one point per GROUP BY time window, filled by the fill
//!   option; a transformation of it reads one window more before the time
//!   range (after it, in descending order), so that the first window of the
//!   range has a value (`cumulative_sum` needs none);
//! - a transformation runs over its input in the query's order, skipping
//!   null points.
//!
//! OFFSET and LIMIT cut each stream. The streams are then joined by time
//! into rows: the k-th point at a time of every stream goes into the k-th row
//! at that time; a stream without a point there gives the fill value
//! (`fill(<number>)` cast to the stream's type, `fill(previous)` its last
//! value in the series, otherwise null). The columns (arithmetic and math
//! functions over the calls) are evaluated on each row.

use super::*;

/// What one call of the select list computes for an output series.
enum Stream {
    /// The points of a raw field.
    Raw(String),
    /// An aggregate per window (`call` indexes the query's aggregate calls)
    /// over `extra` windows more than the time range.
    Aggregate { call: usize, extra: i64 },
    /// A transformation of another stream.
    Transform {
        name: String,
        args: Vec<Expr>,
        input: Box<Stream>,
    },
}

impl Stream {
    /// Whether an aggregate feeds this stream through a transformation.
    fn transforms_aggregate(&self) -> bool {
        match self {
            Stream::Transform { input, .. } => {
                matches!(input.as_ref(), Stream::Aggregate { .. }) || input.transforms_aggregate()
            }
            _ => false,
        }
    }

    fn raw_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Stream::Raw(field) => out.push(field),
            Stream::Transform { input, .. } => input.raw_fields(out),
            Stream::Aggregate { .. } => {}
        }
    }

    fn max_extra(&self) -> i64 {
        match self {
            Stream::Aggregate { extra, .. } => *extra,
            Stream::Transform { input, .. } => input.max_extra(),
            Stream::Raw(_) => 0,
        }
    }
}

/// The value type of a stream, which a `fill(<number>)` value is cast to.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
    /// Of a field that does not exist.
    Other,
}

fn kind_of_field(schema: &Schema, field: &str) -> Kind {
    match schema.fields.get(field) {
        Some(FieldType::Float) => Kind::Float,
        Some(FieldType::Integer) => Kind::Integer,
        Some(FieldType::Unsigned) => Kind::Unsigned,
        Some(FieldType::String) => Kind::String,
        Some(FieldType::Boolean) => Kind::Boolean,
        None => Kind::Other,
    }
}

fn kind_of(stream: &Stream, calls: &[Expr], schema: &Schema) -> Kind {
    match stream {
        Stream::Raw(field) => kind_of_field(schema, field),
        Stream::Aggregate { call, .. } => match calls.get(*call) {
            Some(Expr::Call { name, .. }) => match name.as_str() {
                "count" => Kind::Integer,
                "mean" | "median" | "stddev" | "integral" => Kind::Float,
                _ => calls
                    .get(*call)
                    .and_then(call_field)
                    .map_or(Kind::Other, |field| kind_of_field(schema, &field)),
            },
            _ => Kind::Other,
        },
        Stream::Transform { name, input, .. } => match name.as_str() {
            "derivative" | "non_negative_derivative" | "moving_average" => Kind::Float,
            "elapsed" => Kind::Integer,
            _ => kind_of(input, calls, schema),
        },
    }
}

/// `fill(<number>)` as a value of a stream's type.
fn fill_value(fill: &Fill, kind: Kind) -> Option<Cell> {
    let (float, integer) = match fill {
        Fill::Number(v) => (*v, *v as i64),
        Fill::Integer(v) => (*v as f64, *v),
        _ => return None,
    };
    Some(match (kind, fill) {
        (Kind::Float, _) => Cell::Float(float),
        (Kind::Integer, _) => Cell::Integer(integer),
        (Kind::Unsigned, _) => Cell::Unsigned(integer as u64),
        (Kind::Other, Fill::Number(v)) => Cell::Float(*v),
        (Kind::Other, _) => Cell::Integer(integer),
        (Kind::String | Kind::Boolean, _) => return None,
    })
}

/// The type checks InfluxDB makes as it builds a stream's iterators.
fn check_types(stream: &Stream, calls: &[Expr], schema: &Schema) -> Result<()> {
    match stream {
        Stream::Raw(_) => Ok(()),
        Stream::Aggregate { call, .. } => match calls.get(*call) {
            Some(call) => check_call_types(call, schema),
            None => Ok(()),
        },
        Stream::Transform { name, input, .. } => {
            check_types(input, calls, schema)?;
            let iterator = match kind_of(input, calls, schema) {
                _ if name == "elapsed" => return Ok(()),
                Kind::String => "string",
                Kind::Boolean => "boolean",
                _ => return Ok(()),
            };
            let what = match name.as_str() {
                "non_negative_derivative" => "derivative",
                "non_negative_difference" => "difference",
                "cumulative_sum" => "cumulative sum",
                "moving_average" => "moving average",
                other => other,
            };
            Err(format!(
                "unsupported {what} iterator type: *query.{iterator}InterruptIterator"
            ))
        }
    }
}

/// Whether a select list holds a transformation.
pub(super) fn has_transform(select: &SelectStatement) -> bool {
    fn walk(expr: &Expr) -> bool {
        match expr {
            Expr::Call { name, args } => {
                TRANSFORMS.contains(&name.as_str()) || args.iter().any(walk)
            }
            Expr::Binary { lhs, rhs, .. } => walk(lhs) || walk(rhs),
            Expr::Paren(inner) => walk(inner),
            _ => false,
        }
    }
    select.fields.iter().any(|field| walk(&field.expr))
}

// ---------------------------------------------------------------- checks

/// What InfluxDB's compiler notes about a select list.
#[derive(Default)]
struct Compiled {
    interval: bool,
    calls: usize,
    not_only_selectors: bool,
    auxiliary: bool,
    top_bottom: Option<String>,
    distinct: bool,
}

/// Go's name for the type of an expression (InfluxDB prints it in errors).
fn go_type(expr: &Expr) -> &'static str {
    match expr {
        Expr::VarRef { .. } => "*influxql.VarRef",
        Expr::Call { .. } => "*influxql.Call",
        Expr::Integer(_) => "*influxql.IntegerLiteral",
        Expr::Number(_) => "*influxql.NumberLiteral",
        Expr::String(_) => "*influxql.StringLiteral",
        Expr::Boolean(_) => "*influxql.BooleanLiteral",
        Expr::Duration(_) => "*influxql.DurationLiteral",
        Expr::Regex(_) => "*influxql.RegexLiteral",
        Expr::Wildcard { .. } => "*influxql.Wildcard",
        Expr::Binary { .. } => "*influxql.BinaryExpr",
        Expr::Paren(_) => "*influxql.ParenExpr",
    }
}

/// The checks InfluxDB makes of a select list with transformations, with
/// its error texts.
pub(super) fn validate(select: &SelectStatement) -> Result<()> {
    let mut compiled = Compiled {
        interval: select
            .dimensions
            .iter()
            .any(|d| matches!(d, Dimension::Time { .. })),
        ..Compiled::default()
    };
    for field in &select.fields {
        if matches!(&field.expr, Expr::VarRef { name, .. } if name.eq_ignore_ascii_case("time")) {
            continue;
        }
        compile_expr(&field.expr, &mut compiled, false)?;
    }
    if compiled.calls > 1 {
        if let Some(name) = &compiled.top_bottom {
            return Err(format!(
                "selector function {name}() cannot be combined with other functions"
            ));
        }
    }
    if compiled.distinct && (compiled.calls != 1 || compiled.auxiliary) {
        return Err(
            "aggregate function distinct() cannot be combined with other functions or fields"
                .into(),
        );
    }
    if compiled.auxiliary {
        if compiled.not_only_selectors {
            return Err("mixing aggregate and non-aggregate queries is not supported".into());
        }
        if compiled.calls > 1 {
            return Err(
                "mixing multiple selector functions with tags or fields is not supported".into(),
            );
        }
    }
    Ok(())
}

fn compile_expr(expr: &Expr, compiled: &mut Compiled, nested: bool) -> Result<()> {
    match expr {
        Expr::VarRef { .. } | Expr::Wildcard { .. } | Expr::Regex(_) => {
            compiled.auxiliary = true;
            Ok(())
        }
        Expr::Binary { lhs, rhs, .. } => {
            compile_expr(lhs, compiled, nested)?;
            compile_expr(rhs, compiled, nested)
        }
        Expr::Paren(inner) => compile_expr(inner, compiled, nested),
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => args
            .iter()
            .try_for_each(|arg| compile_expr(arg, compiled, nested)),
        Expr::Call { name, args } if TRANSFORMS.contains(&name.as_str()) => {
            compiled.calls += 1;
            compile_transform(name, args, compiled)
        }
        Expr::Call { name, args } => {
            compiled.calls += 1;
            check_arguments(name, args)?;
            if !SELECTORS.contains(&name.as_str()) {
                compiled.not_only_selectors = true;
            }
            match name.as_str() {
                "top" | "bottom" => compiled.top_bottom = Some(name.clone()),
                "distinct" if !nested => compiled.distinct = true,
                _ => {}
            }
            for arg in args {
                if let Expr::Call { .. } = arg {
                    compile_expr(arg, compiled, true)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn compile_transform(name: &str, args: &[Expr], compiled: &mut Compiled) -> Result<()> {
    let got = args.len();
    match name {
        "derivative" | "non_negative_derivative" | "elapsed" => {
            if !(1..=2).contains(&got) {
                return Err(format!(
                    "invalid number of arguments for {name}, expected at least 1 but no more than 2, got {got}"
                ));
            }
            match args.get(1) {
                Some(Expr::Duration(value)) if *value <= 0 => {
                    return Err(format!(
                        "duration argument must be positive, got {}",
                        crate::influxql::lexer::format_duration_literal(*value)
                    ))
                }
                Some(Expr::Duration(_)) | None => {}
                Some(other) => {
                    return Err(format!(
                        "second argument to {name} must be a duration, got {}",
                        go_type(other)
                    ))
                }
            }
        }
        "moving_average" => {
            if got != 2 {
                return Err(format!(
                    "invalid number of arguments for moving_average, expected 2, got {got}"
                ));
            }
            match &args[1] {
                Expr::Integer(n) if *n <= 1 => {
                    return Err(format!(
                        "moving_average window must be greater than 1, got {n}"
                    ))
                }
                Expr::Integer(_) => {}
                other => {
                    return Err(format!(
                        "second argument for moving_average must be an integer, got {}",
                        go_type(other)
                    ))
                }
            }
        }
        _ => {
            if got != 1 {
                return Err(format!(
                    "invalid number of arguments for {name}, expected 1, got {got}"
                ));
            }
        }
    }
    compiled.not_only_selectors = true;
    match &args[0] {
        call @ Expr::Call { .. } => {
            if !compiled.interval {
                return Err(format!("{name} aggregate requires a GROUP BY interval"));
            }
            compile_expr(call, compiled, true)
        }
        arg => {
            if compiled.interval {
                return Err(format!(
                    "aggregate function required inside the call to {name}"
                ));
            }
            match arg {
                Expr::VarRef { .. } | Expr::Wildcard { .. } | Expr::Regex(_) => Ok(()),
                _ => Err(format!("expected field argument in {name}()")),
            }
        }
    }
}

// ---------------------------------------------------------------- planning

/// The calls a column is made of, outside of math functions and arithmetic.
fn top_calls(expr: &Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => {
            args.iter().for_each(|arg| top_calls(arg, out))
        }
        Expr::Call { .. } if !out.contains(expr) => out.push(expr.clone()),
        Expr::Binary { lhs, rhs, .. } => {
            top_calls(lhs, out);
            top_calls(rhs, out);
        }
        Expr::Paren(inner) => top_calls(inner, out),
        _ => {}
    }
}

/// The stream of a call; aggregates are added to `calls`.
fn stream_of(call: &Expr, calls: &mut Vec<Expr>, extra: i64) -> Result<Stream> {
    let Expr::Call { name, args } = call else {
        return Err(format!("unsupported expression: {call}"));
    };
    if is_aggregate(name) {
        let index = match calls.iter().position(|c| c == call) {
            Some(index) => index,
            None => {
                calls.push(call.clone());
                calls.len() - 1
            }
        };
        return Ok(Stream::Aggregate { call: index, extra });
    }
    if !TRANSFORMS.contains(&name.as_str()) {
        return Err(format!("unsupported call: {name}"));
    }
    let more = if name == "cumulative_sum" { 0 } else { 1 };
    let input = match args.first() {
        Some(Expr::VarRef { name: field, .. }) => Stream::Raw(field.clone()),
        Some(inner @ Expr::Call { .. }) => stream_of(inner, calls, extra + more)?,
        _ => return Err(format!("expected field argument in {name}()")),
    };
    Ok(Stream::Transform {
        name: name.clone(),
        args: args.clone(),
        input: Box::new(input),
    })
}

/// A point of a stream; a null value is a null point (an empty window under
/// fill(null)).
type StreamPoint = (i64, Cell);

/// The points of each raw field over a group, in the query's order.
type RawPoints = BTreeMap<String, Vec<StreamPoint>>;

/// The windows of a group: (window start, one result per aggregate call).
type WindowResults = Vec<(i64, Vec<Reduced>)>;

/// The aggregate results of a group: in UTC every window with a result per
/// call; in a zone (GROUP BY time with `tz()`), each call's own results,
/// unfilled, as `zoned` reduces them.
enum Aggregates {
    Windows(WindowResults),
    Zoned(Vec<zoned::CallRows>),
}

impl MeasurementQuery<'_> {
    pub(super) fn transformed(&self) -> Result<Vec<ResultSeries>> {
        let schema = self.schema()?;
        let group_tags = self.group_tags(&schema)?;
        let columns = expand_columns(self.select, &schema, &group_tags)?;
        let mut tops: Vec<Expr> = Vec::new();
        for column in &columns {
            top_calls(&column.expr, &mut tops);
        }
        let mut calls: Vec<Expr> = Vec::new();
        let streams: Vec<Stream> = tops
            .iter()
            .map(|call| stream_of(call, &mut calls, 0))
            .collect::<Result<_>>()?;
        for stream in &streams {
            check_types(stream, &calls, &schema)?;
        }
        let kinds: Vec<Kind> = streams
            .iter()
            .map(|stream| kind_of(stream, &calls, &schema))
            .collect();
        let interval = self.select.dimensions.iter().find_map(|d| match d {
            Dimension::Time { interval, offset } => Some((*interval, offset.unwrap_or(0))),
            _ => None,
        });
        let ascending = !self.select.descending;
        // In a zone, windows follow InfluxDB's reductions (see `zoned`).
        let grid = match (self.zone, interval) {
            (Some(zone), Some(interval)) => Some(
                zoned::Grid::new(zone, interval, self.select.descending)
                    .ok_or_else(|| "invalid duration".to_string())?,
            ),
            _ => None,
        };
        // InfluxDB moves the start of the range one window back for these;
        // from an unbounded start that overflows, and the answer is empty.
        if interval.is_some()
            && ascending
            && self.plan.min_time == MIN_NANO_TIME
            && streams.iter().any(Stream::transforms_aggregate)
        {
            return Ok(Vec::new());
        }
        let mut raw_fields: Vec<&str> = Vec::new();
        for stream in &streams {
            stream.raw_fields(&mut raw_fields);
        }
        raw_fields.retain(|field| schema.fields.contains_key(*field));
        raw_fields.sort_unstable();
        raw_fields.dedup();
        let raw_fields: Vec<String> = raw_fields.into_iter().map(String::from).collect();
        let condition_fields = self.condition_fields(&schema);
        let row_filter = !condition_fields.is_empty();

        // Aggregates are computed over the extra windows too.
        let extra = streams.iter().map(Stream::max_extra).max().unwrap_or(0);
        let (window_range, read_range) = self.extended_ranges(interval, extra);
        let extended_plan = Plan {
            min_time: read_range.0,
            max_time: read_range.1,
            residual: self.plan.residual.clone(),
            nothing: false,
        };
        let extended = MeasurementQuery {
            select: self.select,
            plan: &extended_plan,
            source: self.source,
            measurement: self.measurement,
            zone: self.zone,
            now: self.now,
            limits: self.limits,
            counters: self.counters,
        };
        let fill = self.select.fill.clone().unwrap_or(Fill::Null);
        let defaults: Vec<Option<Cell>> =
            kinds.iter().map(|kind| fill_value(&fill, *kind)).collect();
        let limit = usize::try_from(self.select.limit).unwrap_or(usize::MAX);
        let offset = usize::try_from(self.select.offset).unwrap_or(usize::MAX);
        let column_names: Vec<String> = std::iter::once("time".to_string())
            .chain(columns.iter().map(|c| c.name.clone()))
            .collect();
        let context = StreamContext {
            calls: &calls,
            schema: &schema,
            fill: &fill,
            ascending,
            interval,
            extra,
            grid: grid.as_ref(),
            range: self.extended_ranges(interval, 0).0,
            stamp: if self.plan.min_time == MIN_NANO_TIME {
                0
            } else {
                self.plan.min_time
            },
        };

        let mut groups = Vec::new();
        for group in self.groups(&group_tags, &condition_fields)? {
            let raw = if raw_fields.is_empty() {
                RawPoints::new()
            } else {
                self.raw_points(&group, &raw_fields, &schema, row_filter)?
            };
            let windows = match (&grid, interval) {
                _ if calls.is_empty() => Aggregates::Windows(Vec::new()),
                (Some(grid), Some(interval)) => Aggregates::Zoned(extended.zoned_results(
                    grid,
                    &group,
                    &calls,
                    interval,
                    &schema,
                    (row_filter, &condition_fields),
                )?),
                _ => Aggregates::Windows(extended.window_results(
                    &group,
                    &calls,
                    interval,
                    window_range,
                    &schema,
                    (row_filter, &condition_fields),
                )?),
            };
            let mut outputs: Vec<Vec<StreamPoint>> = Vec::with_capacity(streams.len());
            for stream in &streams {
                let points = context.run(stream, &raw, &windows)?;
                outputs.push(
                    points
                        .into_iter()
                        .skip(offset)
                        .take(if limit == 0 { usize::MAX } else { limit })
                        .collect(),
                );
            }
            let rows = join(
                outputs,
                &defaults,
                matches!(fill, Fill::Previous),
                ascending,
            );
            if rows.is_empty() {
                continue;
            }
            let rows = rows
                .into_iter()
                .map(|(time, values)| {
                    let lookup = |expr: &Expr| -> Option<Cell> {
                        match expr {
                            Expr::Call { name, .. } if !MATH.contains(&name.as_str()) => Some(
                                tops.iter()
                                    .position(|top| top == expr)
                                    .and_then(|i| values.get(i).cloned())
                                    .unwrap_or(Cell::Null),
                            ),
                            Expr::VarRef { .. } => Some(Cell::Null),
                            _ => None,
                        }
                    };
                    let mut row = Vec::with_capacity(columns.len() + 1);
                    row.push(Cell::Time(time));
                    row.extend(columns.iter().map(|c| evaluate(&c.expr, &lookup)));
                    row
                })
                .collect();
            groups.push((group.tag_values, column_names.clone(), rows));
        }
        Ok(self.finish_limited(&group_tags, groups, true))
    }

    /// The windows to compute aggregates over, with `extra` windows before
    /// the time range (after it, descending), and the time range to read
    /// for them.
    fn extended_ranges(
        &self,
        interval: Option<(i64, i64)>,
        extra: i64,
    ) -> ((i64, i64), (i64, i64)) {
        let span = extra.saturating_mul(interval.map_or(0, |(length, _)| length));
        let (min, max) = (self.plan.min_time, self.plan.max_time);
        // GROUP BY time without an upper bound ends now.
        let last = if interval.is_some() && max == MAX_NANO_TIME {
            self.now
        } else {
            max
        };
        if !self.select.descending {
            let first = if min == MIN_NANO_TIME {
                MIN_NANO_TIME
            } else {
                min.saturating_sub(span)
            };
            ((first, last), (first, max))
        } else {
            let read_max = if max == MAX_NANO_TIME {
                MAX_NANO_TIME
            } else {
                max.saturating_add(span)
            };
            ((min, last.saturating_add(span)), (min, read_max))
        }
    }

    /// The points of `fields` over the series of a group (the row filter
    /// applied), each field's in the query's order; points of one time come
    /// in InfluxDB's order (see `heap_merge`).
    fn raw_points(
        &self,
        group: &Group,
        fields: &[String],
        schema: &Schema,
        row_filter: bool,
    ) -> Result<RawPoints> {
        let mut read = fields.to_vec();
        for name in self.condition_fields(schema) {
            if !read.contains(&name) {
                read.push(name);
            }
        }
        let descending = self.select.descending;
        let shard_group = self.source.shard_group_duration();
        // field -> shard group -> the points of each series (in series
        // key order), in the query's order.
        let mut parts: BTreeMap<String, BTreeMap<i64, Vec<Vec<StreamPoint>>>> = BTreeMap::new();
        let mut add = |field: &str, member: usize, time: i64, value: &Value| {
            let lists = parts
                .entry(field.to_string())
                .or_default()
                .entry(shard_group.map_or(0, |d| go_shard_group(time, d)))
                .or_default();
            while lists.len() <= member {
                lists.push(Vec::new());
            }
            lists[member].push((time, cell_of(value)));
        };
        for (member, series) in group.series.iter().enumerate() {
            if !row_filter {
                // Field by field: points of one time in one series (from a
                // subquery) all count.
                for field in fields {
                    for (time, value) in self.read_limited(series, field)? {
                        add(field, member, time, &value);
                    }
                }
                continue;
            }
            for (time, values) in self.read_rows(series, &read, schema, row_filter)? {
                for field in fields {
                    if let Some(value) = values.get(field) {
                        add(field, member, time, value);
                    }
                }
            }
        }
        let mut out = RawPoints::new();
        for (field, by_shard) in parts {
            let mut points = Vec::new();
            let mut shards: Vec<Vec<Vec<StreamPoint>>> = by_shard.into_values().collect();
            if descending {
                shards.reverse();
            }
            for mut lists in shards {
                if descending {
                    // Descending, InfluxDB lists the series in reverse.
                    lists.iter_mut().for_each(|list| list.reverse());
                    lists.reverse();
                }
                points.extend(heap_merge(lists, descending));
            }
            out.insert(field, points);
        }
        Ok(out)
    }

    /// Each aggregate call's results in a zone (unfilled, in the query's
    /// order), read over this query's range.
    fn zoned_results(
        &self,
        grid: &zoned::Grid<'_>,
        group: &Group,
        calls: &[Expr],
        interval: (i64, i64),
        schema: &Schema,
        (row_filter, condition_fields): (bool, &[String]),
    ) -> Result<Vec<zoned::CallRows>> {
        let (needed, read_fields) = call_fields(calls, schema, condition_fields);
        let inputs = zoned::Inputs {
            columns: &[],
            calls,
            schema,
            raw_fields: &[],
            needed: &needed,
            read_fields: &read_fields,
            row_filter,
            // spread is reduced once over the points, as InfluxDB does.
            streaming: !row_filter
                && calls
                    .iter()
                    .all(|call| is_decomposable(call) && zoned::is_pushed_down(call)),
            interval,
            range: (self.plan.min_time, self.plan.max_time),
        };
        Ok(self.zoned_calls(grid, group, &inputs)?.0)
    }

    /// Every window of `[min, max]` with the result of each aggregate call
    /// (null where the call saw no point), read over this query's range.
    fn window_results(
        &self,
        group: &Group,
        calls: &[Expr],
        interval: Option<(i64, i64)>,
        (min, max): (i64, i64),
        schema: &Schema,
        (row_filter, condition_fields): (bool, &[String]),
    ) -> Result<WindowResults> {
        let mut out = Vec::new();
        if !row_filter && calls.iter().all(is_decomposable) {
            let partials = self.stream_partials(group, calls, interval, schema)?;
            let first = partials.keys().next().copied();
            for (start, _) in windows(interval, min, max, first)? {
                let states = partials.get(&start);
                let results = calls
                    .iter()
                    .enumerate()
                    .map(|(index, call)| {
                        let known =
                            call_field(call).is_some_and(|f| schema.fields.contains_key(&f));
                        match states.and_then(|states| states.get(index)) {
                            Some(state) if known && state.count > 0 => state.finish(call),
                            _ => one(Cell::Null),
                        }
                    })
                    .collect();
                out.push((start, results));
            }
            return Ok(out);
        }
        let (needed, read) = call_fields(calls, schema, condition_fields);
        let (points, _) = self.group_points(&group.series, &read, &needed, schema, row_filter)?;
        let first = points
            .values()
            .filter_map(|list| list.first().map(|p| p.time))
            .min();
        for (start, end) in windows(interval, min, max, first)? {
            let (results, _) = reduce_window(calls, &points, schema, &group.series, (start, end))?;
            out.push((start, results));
        }
        Ok(out)
    }
}

/// The fields the calls read (those of the schema), and with them the
/// fields the condition reads.
fn call_fields(
    calls: &[Expr],
    schema: &Schema,
    condition_fields: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut needed: Vec<String> = Vec::new();
    for call in calls {
        if let Some(field) = call_field(call) {
            if schema.fields.contains_key(&field) && !needed.contains(&field) {
                needed.push(field);
            }
        }
    }
    let mut read = needed.clone();
    for name in condition_fields {
        if !read.contains(name) {
            read.push(name.clone());
        }
    }
    (needed, read)
}

/// InfluxDB's shard group of a time: Go truncates times to multiples of the
/// duration since January 1 of year 1 (so 7-day groups start on Mondays).
fn go_shard_group(time: i64, duration: i64) -> i64 {
    const EPOCH_SINCE_YEAR_ONE: i128 = 62_135_596_800 * 1_000_000_000;
    let since = i128::from(time) + EPOCH_SINCE_YEAR_ONE;
    i64::try_from(since.div_euclid(i128::from(duration.max(1)))).unwrap_or(0)
}

/// Merge the points of several series (each list in the query's order, in
/// series key order) as InfluxDB's sorted merge iterator does: a Go
/// `container/heap` ordered by time alone, so the order of points of one
/// time follows the heap, not the series.
fn heap_merge(lists: Vec<Vec<StreamPoint>>, descending: bool) -> Vec<StreamPoint> {
    struct Item {
        point: StreamPoint,
        rest: std::vec::IntoIter<StreamPoint>,
    }
    let less = |heap: &[Item], i: usize, j: usize| {
        let (a, b) = (heap[i].point.0, heap[j].point.0);
        if descending {
            a > b
        } else {
            a < b
        }
    };
    let down = |heap: &mut Vec<Item>, start: usize, n: usize| {
        let mut i = start;
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let mut j = left;
            if left + 1 < n && less(heap, left + 1, left) {
                j = left + 1;
            }
            if !less(heap, j, i) {
                break;
            }
            heap.swap(i, j);
            i = j;
        }
    };
    let mut heap: Vec<Item> = lists
        .into_iter()
        .filter_map(|list| {
            let mut rest = list.into_iter();
            rest.next().map(|point| Item { point, rest })
        })
        .collect();
    let n = heap.len();
    for i in (0..n / 2).rev() {
        down(&mut heap, i, n);
    }
    let mut out = Vec::new();
    while !heap.is_empty() {
        let last = heap.len() - 1;
        heap.swap(0, last);
        down(&mut heap, 0, last);
        let Some(mut item) = heap.pop() else {
            break;
        };
        match item.rest.next() {
            Some(next) => {
                out.push(std::mem::replace(&mut item.point, next));
                heap.push(item);
                let mut j = heap.len() - 1;
                while j > 0 {
                    let parent = (j - 1) / 2;
                    if !less(&heap, j, parent) {
                        break;
                    }
                    heap.swap(parent, j);
                    j = parent;
                }
            }
            None => out.push(item.point),
        }
    }
    out
}

/// What computing a stream needs besides its input.
struct StreamContext<'a> {
    calls: &'a [Expr],
    schema: &'a Schema,
    fill: &'a Fill,
    ascending: bool,
    interval: Option<(i64, i64)>,
    /// The extra windows computed beyond the time range.
    extra: i64,
    /// In a zone, its windows (with GROUP BY time).
    grid: Option<&'a zoned::Grid<'a>>,
    /// The windows' time range without extra windows.
    range: (i64, i64),
    /// The time of the single window without GROUP BY time.
    stamp: i64,
}

impl StreamContext<'_> {
    /// The points of a stream, in the query's order.
    fn run(
        &self,
        stream: &Stream,
        raw: &RawPoints,
        aggregates: &Aggregates,
    ) -> Result<Vec<StreamPoint>> {
        match stream {
            Stream::Raw(field) => Ok(raw.get(field).cloned().unwrap_or_default()),
            Stream::Aggregate { call, extra } => match (aggregates, self.grid) {
                (Aggregates::Zoned(results), Some(grid)) => {
                    self.zoned_aggregate(grid, *call, *extra, results)
                }
                (Aggregates::Windows(windows), _) => {
                    let kind = kind_of(stream, self.calls, self.schema);
                    Ok(self.aggregate(*call, *extra, kind, windows))
                }
                (Aggregates::Zoned(_), None) => Ok(Vec::new()),
            },
            Stream::Transform { name, args, input } => {
                let points = self.run(input, raw, aggregates)?;
                let unit = match args.get(1) {
                    Some(Expr::Duration(unit)) => Some(*unit),
                    _ => None,
                };
                Ok(transform(
                    name,
                    args,
                    points,
                    unit,
                    self.interval.map(|(length, _)| length),
                    self.ascending,
                ))
            }
        }
    }

    /// In a zone, one point per window of the stream's range, filled as
    /// InfluxDB's fill iterator fills in a zone.
    fn zoned_aggregate(
        &self,
        grid: &zoned::Grid<'_>,
        call: usize,
        extra: i64,
        results: &[zoned::CallRows],
    ) -> Result<Vec<StreamPoint>> {
        let (Some(expr), Some(rows)) = (self.calls.get(call), results.get(call)) else {
            return Ok(Vec::new());
        };
        // This stream's range: `extra` windows before the time range (after
        // it, descending); the results are read over the largest one.
        let span = extra.saturating_mul(self.interval.map_or(0, |(length, _)| length));
        let (mut min, mut max) = self.range;
        let rows: zoned::CallRows = if self.ascending {
            if min != MIN_NANO_TIME {
                min = min.saturating_sub(span);
            }
            let first = grid.start_of(min);
            rows.iter()
                .filter(|(time, _)| min == MIN_NANO_TIME || *time >= first)
                .cloned()
                .collect()
        } else {
            max = max.saturating_add(span);
            let last = grid.start_of(max);
            rows.iter()
                .filter(|(time, _)| *time <= last)
                .cloned()
                .collect()
        };
        let filled = grid.fill_call(self.fill, expr, rows, (min, max))?;
        let mut out = Vec::with_capacity(filled.len());
        for (time, reduced, _) in filled {
            match reduced {
                Reduced::One { value, .. } => out.push((time, value)),
                Reduced::Many(items) => out.extend(
                    items
                        .into_iter()
                        .map(|item| (item.time.unwrap_or(time), item.value)),
                ),
            }
        }
        Ok(out)
    }

    /// One point per window of the stream's range, filled.
    fn aggregate(
        &self,
        call: usize,
        extra: i64,
        kind: Kind,
        windows: &WindowResults,
    ) -> Vec<StreamPoint> {
        // The windows computed beyond what this stream reads.
        let unused = usize::try_from(self.extra - extra).unwrap_or(0);
        let range: &[(i64, Vec<Reduced>)] = if self.interval.is_none() {
            windows
        } else if self.ascending {
            windows.get(unused.min(windows.len())..).unwrap_or(&[])
        } else {
            windows
                .get(..windows.len().saturating_sub(unused))
                .unwrap_or(&[])
        };
        // (time, values): no value is an empty window.
        let mut slots: Vec<(i64, Vec<StreamPoint>)> = Vec::with_capacity(range.len());
        for (start, results) in range {
            let stamp = if self.interval.is_some() {
                *start
            } else {
                self.stamp
            };
            let values = match results.get(call) {
                Some(Reduced::One { value, .. }) if !matches!(value, Cell::Null) => {
                    vec![(stamp, value.clone())]
                }
                Some(Reduced::Many(items)) => items
                    .iter()
                    .map(|item| (item.time.unwrap_or(stamp), item.value.clone()))
                    .collect(),
                _ => Vec::new(),
            };
            slots.push((stamp, values));
        }
        if slots.iter().all(|(_, values)| values.is_empty()) {
            return Vec::new();
        }
        if self.interval.is_none() {
            return slots.into_iter().flat_map(|(_, values)| values).collect();
        }
        if !self.ascending {
            slots.reverse();
        }
        let is_count =
            matches!(self.calls.get(call), Some(Expr::Call { name, .. }) if name == "count");
        let mut out: Vec<StreamPoint> = Vec::with_capacity(slots.len());
        let length = self.interval.map_or(1, |(length, _)| length.max(1));
        // The last point that was not filled.
        let mut previous: Option<StreamPoint> = None;
        for index in 0..slots.len() {
            let (time, values) = &slots[index];
            if !values.is_empty() {
                previous = values.last().cloned();
                out.extend(values.iter().cloned());
                continue;
            }
            let filled = match self.fill {
                Fill::None => continue,
                Fill::Null if is_count => Cell::Integer(0),
                Fill::Null => Cell::Null,
                Fill::Number(_) | Fill::Integer(_) => {
                    fill_value(self.fill, kind).unwrap_or(Cell::Null)
                }
                Fill::Previous => previous
                    .as_ref()
                    .map_or(Cell::Null, |(_, value)| value.clone()),
                Fill::Linear => {
                    let after = slots[index + 1..]
                        .iter()
                        .find_map(|(_, values)| values.first());
                    match (&previous, after) {
                        (Some((t0, v0)), Some((t1, v1))) => {
                            linear(time / length, (t0 / length, t1 / length), v0, v1)
                        }
                        _ => Cell::Null,
                    }
                }
            };
            out.push((*time, filled));
        }
        out
    }
}

/// Join streams (each in the query's order) by time: a row per time and
/// k-th point; a stream without a point there takes its default, or its
/// last value under fill(previous).
fn join(
    streams: Vec<Vec<StreamPoint>>,
    defaults: &[Option<Cell>],
    previous_fill: bool,
    ascending: bool,
) -> Vec<(i64, Vec<Cell>)> {
    let mut heads: Vec<std::iter::Peekable<std::vec::IntoIter<StreamPoint>>> = streams
        .into_iter()
        .map(|points| points.into_iter().peekable())
        .collect();
    let mut previous: Vec<Option<Cell>> = vec![None; heads.len()];
    let mut rows = Vec::new();
    loop {
        let next = heads
            .iter_mut()
            .filter_map(|points| points.peek().map(|(time, _)| *time))
            .reduce(|a, b| if ascending { a.min(b) } else { a.max(b) });
        let Some(time) = next else {
            break;
        };
        let mut values = Vec::with_capacity(heads.len());
        for (index, points) in heads.iter_mut().enumerate() {
            let value = match points.next_if(|(t, _)| *t == time) {
                Some((_, value)) if !matches!(value, Cell::Null) => {
                    previous[index] = Some(value.clone());
                    Some(value)
                }
                _ => None,
            };
            values.push(value.unwrap_or_else(|| {
                if previous_fill {
                    previous[index].clone().unwrap_or(Cell::Null)
                } else {
                    defaults.get(index).cloned().flatten().unwrap_or(Cell::Null)
                }
            }));
        }
        rows.push((time, values));
    }
    rows
}

/// Subtract two values as InfluxDB does: integers stay integers.
fn subtract(current: &Cell, previous: &Cell) -> Option<Cell> {
    match (current, previous) {
        (Cell::Integer(a), Cell::Integer(b)) => Some(Cell::Integer(a.wrapping_sub(*b))),
        (Cell::Unsigned(a), Cell::Unsigned(b)) => Some(Cell::Unsigned(a.wrapping_sub(*b))),
        _ => Some(Cell::Float(as_f64(current)? - as_f64(previous)?)),
    }
}

fn is_negative(cell: &Cell) -> bool {
    match cell {
        Cell::Integer(v) => *v < 0,
        Cell::Float(v) => *v < 0.0,
        _ => false,
    }
}

/// A transformation over a stream in the query's order; null points are
/// skipped. `unit` is the duration argument; derivatives default to the
/// GROUP BY interval (1s without one), elapsed to 1ns.
fn transform(
    name: &str,
    args: &[Expr],
    points: Vec<StreamPoint>,
    unit: Option<i64>,
    interval: Option<i64>,
    ascending: bool,
) -> Vec<StreamPoint> {
    let points = points.into_iter().filter(|(_, v)| !matches!(v, Cell::Null));
    let mut out = Vec::new();
    match name {
        "derivative" | "non_negative_derivative" | "difference" | "non_negative_difference" => {
            let derivative = name.ends_with("derivative");
            let non_negative = name.starts_with("non_negative");
            let unit = unit.or(interval).unwrap_or(1_000_000_000) as f64;
            let mut current: Option<StreamPoint> = None;
            for point in points {
                // Of several points at one time, the first counts.
                let Some(previous) = current.take() else {
                    current = Some(point);
                    continue;
                };
                if previous.0 == point.0 {
                    current = Some(previous);
                    continue;
                }
                let Some(difference) = subtract(&point.1, &previous.1) else {
                    current = Some(point);
                    continue;
                };
                if !(non_negative && is_negative(&difference)) {
                    let value = if derivative {
                        let mut elapsed = point.0.saturating_sub(previous.0);
                        if !ascending {
                            elapsed = -elapsed;
                        }
                        let diff = as_f64(&difference).unwrap_or(0.0);
                        Cell::Float(diff / (elapsed as f64 / unit))
                    } else {
                        difference
                    };
                    out.push((point.0, value));
                }
                current = Some(point);
            }
        }
        "cumulative_sum" => {
            let mut total: Option<Cell> = None;
            for (time, value) in points {
                let sum = match &total {
                    Some(total) => arithmetic(BinaryOp::Add, total, &value),
                    None => value,
                };
                total = Some(sum.clone());
                out.push((time, sum));
            }
        }
        "moving_average" => {
            let size = match args.get(1) {
                Some(Expr::Integer(n)) => usize::try_from(*n).unwrap_or(usize::MAX).max(1),
                _ => 1,
            };
            // The running sum as InfluxDB keeps it (rounding included).
            let mut buffer: Vec<Cell> = Vec::new();
            let mut position = 0;
            let mut float_sum = 0.0f64;
            let mut integer_sum = 0i64;
            for (time, value) in points {
                if buffer.len() < size {
                    buffer.push(value.clone());
                } else if let Some(slot) = buffer.get_mut(position) {
                    let old = std::mem::replace(slot, value.clone());
                    match old {
                        Cell::Integer(v) => integer_sum = integer_sum.wrapping_sub(v),
                        other => float_sum -= as_f64(&other).unwrap_or(0.0),
                    }
                }
                match &value {
                    Cell::Integer(v) => integer_sum = integer_sum.wrapping_add(*v),
                    other => float_sum += as_f64(other).unwrap_or(0.0),
                }
                position += 1;
                if position >= size {
                    position = 0;
                }
                if buffer.len() == size {
                    let sum = if matches!(value, Cell::Integer(_)) {
                        integer_sum as f64
                    } else {
                        float_sum
                    };
                    out.push((time, Cell::Float(sum / size as f64)));
                }
            }
        }
        "elapsed" => {
            let unit = unit.unwrap_or(1).max(1);
            let mut previous: Option<i64> = None;
            for (time, _) in points {
                if let Some(before) = previous {
                    out.push((time, Cell::Integer(time.saturating_sub(before) / unit)));
                }
                previous = Some(time);
            }
        }
        _ => {}
    }
    out
}
