//! GROUP BY time in a zone (`tz()` other than UTC), as InfluxDB 1.6.7 runs
//! it.
//!
//! In UTC the windows of GROUP BY time tile the time line and the executor
//! enumerates them. In a zone, InfluxDB computes the window of each point
//! ([`Zone::window`]); around a change of offset these windows need not tile
//! (they can overlap, or not hold the point they were computed from), so the
//! answer depends on the order InfluxDB reduces in. This module follows it:
//!
//! - A reduction ([`Grid::sessions`]) takes the window of its first point, in
//!   query order, and every following point inside that window; the next
//!   point opens the next window. A window that does not hold its own first
//!   point ends the reduction (InfluxDB's iterator stops there).
//! - count, sum, mean, min, max, first and last are reduced per series, then
//!   twice more over those results (InfluxDB merges shards, then sources),
//!   each time by the result's time: the window start, or for a selector the
//!   selected point's time. Other aggregates are reduced once, over the
//!   group's points.
//! - A result's time becomes the start of the window that holds it.
//! - Each call is filled on its own (InfluxDB's fill iterator,
//!   [`Zone::fill_times`]), and the calls are joined into rows by time.
//! - A transformation of an aggregate (`streams`) takes the call's results
//!   from here ([`MeasurementQuery::zoned_calls`]) and fills them the same
//!   way ([`Grid::fill_call`]) before it transforms them.
//!
//! A series group is at most the points of its series in the query range,
//! as in the UTC path; without a zone none of this runs.

use std::ops::Range;

use super::*;

/// The windows of a zoned GROUP BY time, and the order the query reads in.
pub(crate) struct Grid<'a> {
    zone: &'a Zone,
    length: i64,
    shift: i64,
    descending: bool,
}

impl<'a> Grid<'a> {
    /// `None` for an interval that is not positive. The offset is taken
    /// modulo the interval, as InfluxDB does (it matters in a zone: the
    /// offset is subtracted before the zone is looked up).
    pub(crate) fn new(
        zone: &'a Zone,
        (length, offset): (i64, i64),
        descending: bool,
    ) -> Option<Self> {
        (length > 0).then(|| Grid {
            zone,
            length,
            shift: offset % length,
            descending,
        })
    }

    fn window(&self, time: i64) -> (i64, i64) {
        self.zone.window(time, self.length, self.shift)
    }

    /// The start of the window that holds `time`.
    pub(super) fn start_of(&self, time: i64) -> i64 {
        self.window(time).0
    }

    /// The window start of a result time: InfluxDB's interval iterator
    /// (the lowest time stands for "no time", 0).
    fn stamp(&self, time: i64) -> i64 {
        match self.window(time).0 {
            MIN_NANO_TIME => 0,
            start => start,
        }
    }

    /// InfluxDB's reduction over times in query order: each window start and
    /// the items it takes.
    fn sessions(&self, times: &[i64]) -> Vec<(i64, Range<usize>)> {
        let mut out = Vec::new();
        let mut index = 0;
        while index < times.len() {
            let (start, end) = self.window(times[index]);
            let from = index;
            while index < times.len() && start <= times[index] && times[index] < end {
                index += 1;
            }
            if index == from {
                break;
            }
            out.push((start, from..index));
        }
        out
    }
}

/// A series' partial states by window (the first reduction), from its
/// points in time order.
pub(super) fn fold_partials(
    grid: &Grid<'_>,
    values: Vec<(i64, Value)>,
    shape: &PartialShape<'_>,
) -> BTreeMap<i64, Vec<Partial>> {
    let mut times: Vec<i64> = values.iter().map(|(time, _)| *time).collect();
    if grid.descending {
        times.reverse();
    }
    let sessions = grid.sessions(&times);
    // Each session is a run of `values` (in time order): its points are
    // added at once (none past the end of the reduction).
    let count = values.len();
    let mut partials: BTreeMap<i64, Vec<Partial>> = BTreeMap::new();
    for (start, range) in sessions {
        let run = if grid.descending {
            count
                .checked_sub(range.end)
                .and_then(|from| values.get(from..from + range.len()))
        } else {
            values.get(range)
        };
        let Some(run) = run else { continue };
        let states = partials
            .entry(start)
            .or_insert_with(|| shape.calls.iter().map(Partial::for_call).collect());
        for &index in shape.indexes {
            if let Some(state) = states.get_mut(index) {
                state.add_run(run, shape.member);
            }
        }
    }
    partials
}

/// A reduced result on its way up: its time (window start, or the selected
/// point's), the series it came from (for ties) and its state.
struct Item {
    time: i64,
    member: usize,
    state: Partial,
}

fn is_selector(call: &Expr) -> bool {
    matches!(call, Expr::Call { name, .. } if matches!(name.as_str(), "first" | "last" | "min" | "max"))
}

/// The calls InfluxDB reduces per series and again per shard and source.
pub(super) fn is_pushed_down(call: &Expr) -> bool {
    match call {
        Expr::Call { name, args } => {
            matches!(
                name.as_str(),
                "count" | "sum" | "mean" | "min" | "max" | "first" | "last"
            ) && matches!(args.as_slice(), [Expr::VarRef { .. }])
        }
        _ => false,
    }
}

/// The time a reduced state stands at for the next reduction.
fn item_time(call: &Expr, start: i64, state: &Partial) -> i64 {
    let selected = match call {
        Expr::Call { name, .. } => match name.as_str() {
            "first" => &state.first,
            "last" => &state.last,
            "min" => &state.min,
            "max" => &state.max,
            _ => &None,
        },
        _ => &None,
    };
    match selected {
        Some((_, time, _)) if is_selector(call) => *time,
        _ => start,
    }
}

impl Grid<'_> {
    /// One more reduction of results (they are sorted into query order).
    fn reduce_again(&self, call: &Expr, mut items: Vec<Item>) -> Vec<Item> {
        items.sort_by_key(|item| (item.time, item.member));
        if self.descending {
            items.reverse();
        }
        let times: Vec<i64> = items.iter().map(|item| item.time).collect();
        let mut out = Vec::new();
        for (start, range) in self.sessions(&times) {
            let mut state = Partial::for_call(call);
            let mut member = usize::MAX;
            for item in &items[range] {
                state.merge(&item.state);
                member = member.min(item.member);
            }
            out.push(Item {
                time: item_time(call, start, &state),
                member,
                state,
            });
        }
        out
    }

    /// The results of a pushed-down call from its per-series states: two
    /// more reductions, then each at its window start.
    fn finish_pushed(&self, call: &Expr, items: Vec<Item>) -> Vec<(i64, Reduced)> {
        let mut items = items;
        for _ in 0..2 {
            items = self.reduce_again(call, items);
        }
        let mut out: Vec<(i64, Reduced)> = items
            .into_iter()
            .filter(|item| item.state.count > 0)
            .map(|item| (self.stamp(item.time), item.state.finish(call)))
            .collect();
        // Query order (the reductions keep it; a stamp can only tie).
        if self.descending {
            out.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
        } else {
            out.sort_by_key(|(time, _)| *time);
        }
        out
    }
}

/// What [`MeasurementQuery::zoned_rows`] computes a group's rows from.
pub(super) struct Inputs<'a> {
    pub columns: &'a [OutColumn],
    pub calls: &'a [Expr],
    pub schema: &'a Schema,
    pub raw_fields: &'a [String],
    pub needed: &'a [String],
    pub read_fields: &'a [String],
    pub row_filter: bool,
    pub streaming: bool,
    pub interval: (i64, i64),
    /// The query's time range (upper bound: now when unbounded).
    pub range: (i64, i64),
}

/// One call's results, in query order.
pub(super) type CallRows = Vec<(i64, Reduced)>;

/// The points of each series of a group by time (for raw fields beside a
/// selector).
impl MeasurementQuery<'_> {
    /// The rows of one group (ascending), `None` when no call has a point.
    pub(super) fn zoned_rows(
        &self,
        grid: &Grid<'_>,
        group: &Group,
        inputs: &Inputs<'_>,
    ) -> Result<Option<Vec<Vec<Cell>>>> {
        let calls = inputs.calls;
        let (per_call, rows_by_series) = self.zoned_calls(grid, group, inputs)?;
        if per_call.iter().all(Vec::is_empty) {
            // A group without a single point in range is no series.
            return Ok(None);
        }
        let many = per_call
            .iter()
            .flatten()
            .any(|(_, reduced)| matches!(reduced, Reduced::Many(_)));
        let per_call: Vec<Vec<(i64, Reduced, bool)>> = if many {
            per_call
                .into_iter()
                .map(|rows| rows.into_iter().map(|(t, r)| (t, r, false)).collect())
                .collect()
        } else {
            let fill = self.select.fill.clone().unwrap_or(Fill::Null);
            let mut filled = Vec::with_capacity(per_call.len());
            for (call, rows) in calls.iter().zip(per_call) {
                filled.push(grid.fill_call(&fill, call, rows, inputs.range)?);
            }
            filled
        };
        // Join the calls by time, in query order (InfluxDB's scanner): a
        // call without a result at a row's time shows the fill value, or
        // with fill(previous) the value it showed last.
        let types: Vec<CallType> = calls
            .iter()
            .zip(&per_call)
            .map(|(call, rows)| call_type(call, rows))
            .collect();
        let mut shown: Vec<Option<Cell>> = vec![None; per_call.len()];
        let mut positions = vec![0usize; per_call.len()];
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        loop {
            let next = per_call
                .iter()
                .zip(&positions)
                .filter_map(|(rows, &at)| rows.get(at).map(|(time, _, _)| *time));
            let time = if grid.descending {
                next.max()
            } else {
                next.min()
            };
            let Some(time) = time else { break };
            let mut results = Vec::with_capacity(per_call.len());
            for (index, (rows, at)) in per_call.iter().zip(positions.iter_mut()).enumerate() {
                let reduced = match rows.get(*at) {
                    Some((t, reduced, _)) if *t == time => {
                        *at += 1;
                        reduced.clone()
                    }
                    _ => match self.select.fill.as_ref() {
                        Some(Fill::Number(v)) => one(typed_fill(types[index], *v)),
                        Some(Fill::Integer(v)) => one(typed_fill(types[index], *v as f64)),
                        Some(Fill::Previous) => one(shown[index].clone().unwrap_or(Cell::Null)),
                        _ => one(Cell::Null),
                    },
                };
                if let Reduced::One { value, .. } = &reduced {
                    shown[index] = Some(value.clone());
                }
                results.push(reduced);
            }
            for row in self.rows_of_window(
                inputs.columns,
                calls,
                results,
                false,
                time,
                false,
                inputs.raw_fields,
                &rows_by_series,
                &group.series,
            ) {
                rows.push(row.cells);
            }
        }
        if grid.descending {
            rows.reverse();
        }
        Ok(Some(rows))
    }

    /// Each call's results over a group, unfilled and in query order, and
    /// (when calls are reduced over points read here) the points of each
    /// series.
    pub(super) fn zoned_calls(
        &self,
        grid: &Grid<'_>,
        group: &Group,
        inputs: &Inputs<'_>,
    ) -> Result<(Vec<CallRows>, SeriesRows)> {
        let calls = inputs.calls;
        let known =
            |call: &Expr| call_field(call).is_some_and(|f| inputs.schema.fields.contains_key(&f));
        let mut per_call: Vec<CallRows> = Vec::with_capacity(calls.len());
        let mut rows_by_series: SeriesRows = Vec::new();
        if inputs.streaming {
            let mut items: Vec<Vec<Item>> = calls.iter().map(|_| Vec::new()).collect();
            self.series_states(
                group,
                calls,
                Some(inputs.interval),
                inputs.schema,
                |member, indexes, own| {
                    for (start, states) in own {
                        for &index in indexes {
                            let (Some(call), Some(state), Some(list)) =
                                (calls.get(index), states.get(index), items.get_mut(index))
                            else {
                                continue;
                            };
                            if state.count == 0 {
                                continue;
                            }
                            list.push(Item {
                                time: item_time(call, start, state),
                                member,
                                state: state.clone(),
                            });
                        }
                    }
                },
            )?;
            for (call, items) in calls.iter().zip(items) {
                per_call.push(if known(call) {
                    grid.finish_pushed(call, items)
                } else {
                    Vec::new()
                });
            }
        } else {
            // Points per field and series, as the UTC path reads them.
            let (points, rows) = self.group_points(
                &group.series,
                inputs.read_fields,
                inputs.needed,
                inputs.schema,
                inputs.row_filter,
            )?;
            rows_by_series = rows;
            for call in calls {
                let field = call_field(call).unwrap_or_default();
                let list: &[Point] = points.get(&field).map(Vec::as_slice).unwrap_or(&[]);
                if !known(call) || list.is_empty() {
                    per_call.push(Vec::new());
                } else if is_pushed_down(call) {
                    per_call.push(self.pushed_from_points(grid, call, list, group.series.len()));
                } else {
                    per_call.push(self.reduced_once(grid, call, list, &group.series)?);
                }
            }
        }
        Ok((per_call, rows_by_series))
    }

    /// A pushed-down call over points read here: the first reduction per
    /// series, then as [`Grid::finish_pushed`].
    fn pushed_from_points(
        &self,
        grid: &Grid<'_>,
        call: &Expr,
        list: &[Point],
        members: usize,
    ) -> CallRows {
        let mut items = Vec::new();
        for member in 0..members {
            let mut points: Vec<&Point> = list.iter().filter(|p| p.member == member).collect();
            if grid.descending {
                points.reverse();
            }
            let times: Vec<i64> = points.iter().map(|p| p.time).collect();
            for (start, range) in grid.sessions(&times) {
                let mut state = Partial::for_call(call);
                for point in &points[range] {
                    state.add(&point.value, point.time, point.member);
                }
                items.push(Item {
                    time: item_time(call, start, &state),
                    member,
                    state,
                });
            }
        }
        grid.finish_pushed(call, items)
    }

    /// Any other aggregate: one reduction over the group's points.
    fn reduced_once(
        &self,
        grid: &Grid<'_>,
        call: &Expr,
        list: &[Point],
        series: &[SeriesInfo],
    ) -> Result<CallRows> {
        let mut ordered: Vec<Point> = list.to_vec();
        if grid.descending {
            ordered.reverse();
        }
        let times: Vec<i64> = ordered.iter().map(|p| p.time).collect();
        let mut out = Vec::new();
        for (start, range) in grid.sessions(&times) {
            let mut points: Vec<Point> = ordered[range].to_vec();
            points.sort_by_key(|p| (p.time, p.member));
            let reduced = reduce(call, &points, true, series)?;
            // A selector's result stands at the window of its point.
            let selector =
                matches!(call, Expr::Call { name, .. } if SELECTORS.contains(&name.as_str()));
            let time = match &reduced {
                Reduced::One {
                    time: Some(time), ..
                } if selector => grid.stamp(*time),
                _ => grid.stamp(start),
            };
            out.push((time, reduced));
        }
        Ok(out)
    }
}

impl Grid<'_> {
    /// InfluxDB's fill iterator over one call's results (query order in,
    /// query order out); each row says whether it was filled.
    pub(super) fn fill_call(
        &self,
        fill: &Fill,
        call: &Expr,
        rows: CallRows,
        (min, max): (i64, i64),
    ) -> Result<Vec<(i64, Reduced, bool)>> {
        if matches!(fill, Fill::None) || rows.is_empty() {
            return Ok(rows.into_iter().map(|(t, r)| (t, r, false)).collect());
        }
        // Ascending times for the fill iterator.
        let mut ascending: Vec<(i64, Reduced)> = rows;
        if self.descending {
            ascending.reverse();
        }
        let present: Vec<i64> = ascending.iter().map(|(time, _)| *time).collect();
        let slots = self.zone.fill_times(
            (self.length, self.shift),
            (min, max),
            &present,
            self.descending,
            MAX_BUCKETS,
        )?;
        let typed = call_type(
            call,
            &ascending
                .iter()
                .map(|(t, r)| (*t, r.clone(), false))
                .collect::<Vec<_>>(),
        );
        let mut out: Vec<(i64, Reduced, bool)> = Vec::with_capacity(slots.len());
        for (time, index) in &slots {
            match index.and_then(|index| ascending.get(index)) {
                Some((_, reduced)) => out.push((*time, reduced.clone(), false)),
                None => {
                    let value = match fill {
                        Fill::Null if is_count(call) => Cell::Integer(0),
                        Fill::Number(v) => typed_fill(typed, *v),
                        Fill::Integer(v) => typed_fill(typed, *v as f64),
                        _ => Cell::Null,
                    };
                    out.push((*time, one(value), true));
                }
            }
        }
        // In query order from here: previous and linear look back along it.
        if self.descending {
            out.reverse();
        }
        match fill {
            Fill::Previous => {
                let mut last: Option<Reduced> = None;
                for (_, reduced, filled) in out.iter_mut() {
                    if *filled {
                        if let Some(previous) = &last {
                            *reduced = previous.clone();
                        }
                    } else if let Reduced::One { value, .. } = reduced {
                        last = Some(one(value.clone()));
                    }
                }
            }
            Fill::Linear => {
                let value_at = |entry: &(i64, Reduced, bool)| match &entry.1 {
                    Reduced::One { value, .. } => Some((entry.0, value.clone())),
                    Reduced::Many(_) => None,
                };
                let real: Vec<usize> = (0..out.len()).filter(|&i| !out[i].2).collect();
                for pair in real.windows(2) {
                    let (Some((previous_time, previous)), Some((next_time, next))) =
                        (value_at(&out[pair[0]]), value_at(&out[pair[1]]))
                    else {
                        continue;
                    };
                    if matches!(previous, Cell::Null) {
                        continue;
                    }
                    let length = self.length;
                    for entry in out.iter_mut().take(pair[1]).skip(pair[0] + 1) {
                        entry.1 = one(linear(
                            entry.0 / length,
                            (previous_time / length, next_time / length),
                            &previous,
                            &next,
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

fn is_count(call: &Expr) -> bool {
    matches!(call, Expr::Call { name, .. } if name == "count")
}

/// The type of a call's results (an integer call is filled with integers).
#[derive(Clone, Copy)]
enum CallType {
    Integer,
    Unsigned,
    Float,
}

fn call_type(call: &Expr, rows: &[(i64, Reduced, bool)]) -> CallType {
    if is_count(call) {
        return CallType::Integer;
    }
    for (_, reduced, _) in rows {
        if let Reduced::One { value, .. } = reduced {
            match value {
                Cell::Integer(_) => return CallType::Integer,
                Cell::Unsigned(_) => return CallType::Unsigned,
                Cell::Float(_) => return CallType::Float,
                _ => {}
            }
        }
    }
    CallType::Float
}

fn typed_fill(typed: CallType, value: f64) -> Cell {
    match typed {
        CallType::Integer => Cell::Integer(value as i64),
        CallType::Unsigned => Cell::Unsigned(value as u64),
        CallType::Float => Cell::Float(value),
    }
}
