//! The InfluxQL syntax tree. `Display` prints a statement the way InfluxDB
//! prints it (identifiers quoted only when they must be), which is used for
//! the GET deprecation warning and by the parse ↔ print property test.

use std::fmt::{self, Display, Formatter};

use super::lexer::{format_duration_literal, is_keyword};

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select(Box<SelectStatement>),
    CreateDatabase {
        name: String,
        rp: Option<RetentionPolicyOptions>,
    },
    DropDatabase {
        name: String,
    },
    ShowDatabases,
    /// `SHOW USERS`: no users exist until authentication does.
    ShowUsers,
    CreateRetentionPolicy {
        name: String,
        database: String,
        duration: i64,
        replication: u32,
        shard_duration: Option<i64>,
        default: bool,
    },
    AlterRetentionPolicy {
        name: String,
        database: String,
        duration: Option<i64>,
        replication: Option<u32>,
        shard_duration: Option<i64>,
        default: bool,
    },
    DropRetentionPolicy {
        name: String,
        database: String,
    },
    ShowRetentionPolicies {
        database: Option<String>,
    },
    ShowMeasurements {
        database: Option<String>,
        source: Option<MeasurementMatch>,
        condition: Option<Expr>,
        limit: u64,
        offset: u64,
    },
    ShowFieldKeys {
        database: Option<String>,
        sources: Vec<Source>,
        limit: u64,
        offset: u64,
    },
    ShowTagKeys {
        database: Option<String>,
        sources: Vec<Source>,
        condition: Option<Expr>,
        limit: u64,
        offset: u64,
    },
    /// `SHOW TAG VALUES [EXACT] CARDINALITY … WITH KEY …`: distinct
    /// key-value pairs per measurement.
    ShowTagValuesCardinality {
        database: Option<String>,
        exact: bool,
        sources: Vec<Source>,
        keys: TagKeyMatch,
        condition: Option<Expr>,
    },
    /// `SHOW FIELD KEY [EXACT] CARDINALITY`: fields per measurement.
    ShowFieldKeyCardinality {
        database: Option<String>,
        exact: bool,
        sources: Vec<Source>,
        condition: Option<Expr>,
    },
    /// `SHOW TAG KEY [EXACT] CARDINALITY`: tag keys per measurement.
    ShowTagKeyCardinality {
        database: Option<String>,
        exact: bool,
        sources: Vec<Source>,
        condition: Option<Expr>,
    },
    ShowTagValues {
        database: Option<String>,
        sources: Vec<Source>,
        keys: TagKeyMatch,
        condition: Option<Expr>,
        limit: u64,
        offset: u64,
    },
    ShowSeries {
        database: Option<String>,
        sources: Vec<Source>,
        condition: Option<Expr>,
        limit: u64,
        offset: u64,
    },
    DropMeasurement {
        name: String,
    },
    ShowSeriesCardinality {
        database: Option<String>,
        exact: bool,
        sources: Vec<Source>,
        condition: Option<Expr>,
    },
    ShowMeasurementCardinality {
        database: Option<String>,
        exact: bool,
    },
    /// `DELETE [FROM m] [WHERE …]`: points, by tags and time.
    Delete {
        source: Option<MeasurementMatch>,
        condition: Option<Expr>,
    },
    /// `DROP SERIES [FROM …] [WHERE …]`: whole series, by tags.
    DropSeries {
        sources: Vec<Source>,
        condition: Option<Expr>,
    },
}

impl Statement {
    /// Statements that change data or schema.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Statement::CreateDatabase { .. }
                | Statement::DropDatabase { .. }
                | Statement::CreateRetentionPolicy { .. }
                | Statement::AlterRetentionPolicy { .. }
                | Statement::DropRetentionPolicy { .. }
                | Statement::DropMeasurement { .. }
                | Statement::Delete { .. }
                | Statement::DropSeries { .. }
        )
    }
}

/// `WITH DURATION … REPLICATION … SHARD DURATION … NAME …` of CREATE DATABASE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetentionPolicyOptions {
    pub duration: Option<i64>,
    pub replication: Option<u32>,
    pub shard_duration: Option<i64>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MeasurementMatch {
    Name(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TagKeyMatch {
    Eq(String),
    Neq(String),
    In(Vec<String>),
    Regex(String),
    NotRegex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Measurement {
        database: Option<String>,
        rp: Option<String>,
        name: MeasurementMatch,
    },
    Subquery(Box<SelectStatement>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub expr: Expr,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    Time { interval: i64, offset: Option<i64> },
    Tag(String),
    Regex(String),
    Wildcard,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    Null,
    None,
    Previous,
    Linear,
    Number(f64),
    Integer(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectStatement {
    pub fields: Vec<Field>,
    pub sources: Vec<Source>,
    pub condition: Option<Expr>,
    pub dimensions: Vec<Dimension>,
    pub fill: Option<Fill>,
    pub descending: bool,
    pub limit: u64,
    pub offset: u64,
    pub slimit: u64,
    pub soffset: u64,
    /// `tz('…')`, loaded when the statement is parsed.
    pub timezone: Option<super::zone::Zone>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
    Field,
    Tag,
}

impl DataType {
    pub fn name(self) -> &'static str {
        match self {
            DataType::Float => "float",
            DataType::Integer => "integer",
            DataType::Unsigned => "unsigned",
            DataType::String => "string",
            DataType::Boolean => "boolean",
            DataType::Field => "field",
            DataType::Tag => "tag",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    BitAnd,
    BitOr,
    BitXor,
    And,
    Or,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    RegexMatch,
    RegexNotMatch,
}

impl BinaryOp {
    pub fn text(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::BitAnd => "&",
            BinaryOp::BitOr => "|",
            BinaryOp::BitXor => "^",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Eq => "=",
            BinaryOp::Neq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Lte => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Gte => ">=",
            BinaryOp::RegexMatch => "=~",
            BinaryOp::RegexNotMatch => "!~",
        }
    }

    /// InfluxQL precedence: OR < AND < comparisons < + - | ^ < * / % &.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Neq
            | BinaryOp::Lt
            | BinaryOp::Lte
            | BinaryOp::Gt
            | BinaryOp::Gte
            | BinaryOp::RegexMatch
            | BinaryOp::RegexNotMatch => 3,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::BitOr | BinaryOp::BitXor => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::BitAnd => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    VarRef {
        name: String,
        data_type: Option<DataType>,
    },
    Call {
        name: String,
        args: Vec<Expr>,
    },
    Integer(i64),
    Number(f64),
    String(String),
    Boolean(bool),
    Duration(i64),
    Regex(String),
    Wildcard {
        data_type: Option<DataType>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Paren(Box<Expr>),
}

impl Expr {
    pub fn binary(op: BinaryOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }

    /// Whether this expression contains a function call.
    pub fn has_call(&self) -> bool {
        match self {
            Expr::Call { .. } => true,
            Expr::Binary { lhs, rhs, .. } => lhs.has_call() || rhs.has_call(),
            Expr::Paren(inner) => inner.has_call(),
            _ => false,
        }
    }
}

/// An identifier as InfluxQL prints it: bare when it can be, else quoted.
pub struct Ident<'a>(pub &'a str);

impl Display for Ident<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let bare = !text.is_empty()
            && text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !is_keyword(text);
        if bare {
            f.write_str(text)
        } else {
            write!(f, "\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        }
    }
}

pub struct QuotedString<'a>(pub &'a str);

impl Display for QuotedString<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}'",
            self.0
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('\n', "\\n")
        )
    }
}

fn write_regex(f: &mut Formatter<'_>, regex: &str) -> fmt::Result {
    write!(f, "/{}/", regex.replace('/', "\\/"))
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::VarRef { name, data_type } => {
                write!(f, "{}", Ident(name))?;
                if let Some(data_type) = data_type {
                    write!(f, "::{}", data_type.name())?;
                }
                Ok(())
            }
            Expr::Call { name, args } => {
                write!(f, "{name}(")?;
                for (index, arg) in args.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
            Expr::Integer(value) => write!(f, "{value}"),
            Expr::Number(value) => {
                if value.fract() == 0.0 && value.is_finite() && value.abs() < 1e15 {
                    write!(f, "{value:.1}")
                } else {
                    write!(f, "{value}")
                }
            }
            Expr::String(value) => write!(f, "{}", QuotedString(value)),
            Expr::Boolean(value) => write!(f, "{value}"),
            Expr::Duration(value) => f.write_str(&format_duration_literal(*value)),
            Expr::Regex(value) => write_regex(f, value),
            Expr::Wildcard { data_type } => {
                f.write_str("*")?;
                if let Some(data_type) = data_type {
                    write!(f, "::{}", data_type.name())?;
                }
                Ok(())
            }
            Expr::Binary { op, lhs, rhs } => write!(f, "{lhs} {} {rhs}", op.text()),
            Expr::Paren(inner) => write!(f, "({inner})"),
        }
    }
}

impl Display for MeasurementMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MeasurementMatch::Name(name) => write!(f, "{}", Ident(name)),
            MeasurementMatch::Regex(regex) => write_regex(f, regex),
        }
    }
}

impl Display for Source {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Source::Measurement { database, rp, name } => {
                if let Some(database) = database {
                    write!(f, "{}.", Ident(database))?;
                    if let Some(rp) = rp {
                        write!(f, "{}", Ident(rp))?;
                    }
                    f.write_str(".")?;
                } else if let Some(rp) = rp {
                    write!(f, "{}.", Ident(rp))?;
                }
                write!(f, "{name}")
            }
            Source::Subquery(select) => write!(f, "({select})"),
        }
    }
}

fn write_list<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Display for Field {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        if let Some(alias) = &self.alias {
            write!(f, " AS {}", Ident(alias))?;
        }
        Ok(())
    }
}

impl Display for Dimension {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::Time { interval, offset } => {
                write!(f, "time({}", format_duration_literal(*interval))?;
                if let Some(offset) = offset {
                    write!(f, ", {}", format_duration_literal(*offset))?;
                }
                f.write_str(")")
            }
            Dimension::Tag(tag) => write!(f, "{}", Ident(tag)),
            Dimension::Regex(regex) => write_regex(f, regex),
            Dimension::Wildcard => f.write_str("*"),
        }
    }
}

impl Display for SelectStatement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        write_list(f, &self.fields)?;
        f.write_str(" FROM ")?;
        write_list(f, &self.sources)?;
        if let Some(condition) = &self.condition {
            write!(f, " WHERE {condition}")?;
        }
        if !self.dimensions.is_empty() {
            f.write_str(" GROUP BY ")?;
            write_list(f, &self.dimensions)?;
        }
        match &self.fill {
            None => {}
            Some(Fill::Null) => f.write_str(" fill(null)")?,
            Some(Fill::None) => f.write_str(" fill(none)")?,
            Some(Fill::Previous) => f.write_str(" fill(previous)")?,
            Some(Fill::Linear) => f.write_str(" fill(linear)")?,
            Some(Fill::Number(value)) => write!(f, " fill({})", Expr::Number(*value))?,
            Some(Fill::Integer(value)) => write!(f, " fill({value})")?,
        }
        if self.descending {
            f.write_str(" ORDER BY time DESC")?;
        }
        if self.limit > 0 {
            write!(f, " LIMIT {}", self.limit)?;
        }
        if self.offset > 0 {
            write!(f, " OFFSET {}", self.offset)?;
        }
        if self.slimit > 0 {
            write!(f, " SLIMIT {}", self.slimit)?;
        }
        if self.soffset > 0 {
            write!(f, " SOFFSET {}", self.soffset)?;
        }
        if let Some(timezone) = &self.timezone {
            write!(f, " tz({})", QuotedString(timezone.name()))?;
        }
        Ok(())
    }
}

fn write_on(f: &mut Formatter<'_>, database: &Option<String>) -> fmt::Result {
    if let Some(database) = database {
        write!(f, " ON {}", Ident(database))?;
    }
    Ok(())
}

fn write_where(f: &mut Formatter<'_>, condition: &Option<Expr>) -> fmt::Result {
    match condition {
        Some(condition) => write!(f, " WHERE {condition}"),
        None => Ok(()),
    }
}

fn write_cardinality(f: &mut Formatter<'_>, exact: bool) -> fmt::Result {
    f.write_str(if exact {
        "EXACT CARDINALITY"
    } else {
        "CARDINALITY"
    })
}

impl Display for TagKeyMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            TagKeyMatch::Eq(key) => write!(f, "= {}", Ident(key)),
            TagKeyMatch::Neq(key) => write!(f, "!= {}", Ident(key)),
            TagKeyMatch::In(keys) => {
                f.write_str("IN (")?;
                for (index, key) in keys.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Ident(key))?;
                }
                f.write_str(")")
            }
            TagKeyMatch::Regex(regex) => {
                f.write_str("=~ ")?;
                write_regex(f, regex)
            }
            TagKeyMatch::NotRegex(regex) => {
                f.write_str("!~ ")?;
                write_regex(f, regex)
            }
        }
    }
}

fn write_limits(f: &mut Formatter<'_>, limit: u64, offset: u64) -> fmt::Result {
    if limit > 0 {
        write!(f, " LIMIT {limit}")?;
    }
    if offset > 0 {
        write!(f, " OFFSET {offset}")?;
    }
    Ok(())
}

fn write_from(f: &mut Formatter<'_>, sources: &[Source]) -> fmt::Result {
    if !sources.is_empty() {
        f.write_str(" FROM ")?;
        write_list(f, sources)?;
    }
    Ok(())
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Select(select) => write!(f, "{select}"),
            Statement::CreateDatabase { name, rp } => {
                write!(f, "CREATE DATABASE {}", Ident(name))?;
                if let Some(rp) = rp {
                    f.write_str(" WITH")?;
                    if let Some(duration) = rp.duration {
                        write!(f, " DURATION {}", format_duration_literal(duration))?;
                    }
                    if let Some(replication) = rp.replication {
                        write!(f, " REPLICATION {replication}")?;
                    }
                    if let Some(shard) = rp.shard_duration {
                        write!(f, " SHARD DURATION {}", format_duration_literal(shard))?;
                    }
                    if let Some(name) = &rp.name {
                        write!(f, " NAME {}", Ident(name))?;
                    }
                }
                Ok(())
            }
            Statement::DropDatabase { name } => write!(f, "DROP DATABASE {}", Ident(name)),
            Statement::ShowDatabases => f.write_str("SHOW DATABASES"),
            Statement::ShowUsers => f.write_str("SHOW USERS"),
            Statement::CreateRetentionPolicy {
                name,
                database,
                duration,
                replication,
                shard_duration,
                default,
            } => {
                write!(
                    f,
                    "CREATE RETENTION POLICY {} ON {} DURATION {} REPLICATION {replication}",
                    Ident(name),
                    Ident(database),
                    format_duration_literal(*duration)
                )?;
                if let Some(shard) = shard_duration {
                    write!(f, " SHARD DURATION {}", format_duration_literal(*shard))?;
                }
                if *default {
                    f.write_str(" DEFAULT")?;
                }
                Ok(())
            }
            Statement::AlterRetentionPolicy {
                name,
                database,
                duration,
                replication,
                shard_duration,
                default,
            } => {
                write!(
                    f,
                    "ALTER RETENTION POLICY {} ON {}",
                    Ident(name),
                    Ident(database)
                )?;
                if let Some(duration) = duration {
                    write!(f, " DURATION {}", format_duration_literal(*duration))?;
                }
                if let Some(replication) = replication {
                    write!(f, " REPLICATION {replication}")?;
                }
                if let Some(shard) = shard_duration {
                    write!(f, " SHARD DURATION {}", format_duration_literal(*shard))?;
                }
                if *default {
                    f.write_str(" DEFAULT")?;
                }
                Ok(())
            }
            Statement::DropRetentionPolicy { name, database } => {
                write!(
                    f,
                    "DROP RETENTION POLICY {} ON {}",
                    Ident(name),
                    Ident(database)
                )
            }
            Statement::ShowRetentionPolicies { database } => {
                f.write_str("SHOW RETENTION POLICIES")?;
                write_on(f, database)
            }
            Statement::ShowMeasurements {
                database,
                source,
                condition,
                limit,
                offset,
            } => {
                f.write_str("SHOW MEASUREMENTS")?;
                write_on(f, database)?;
                match source {
                    Some(MeasurementMatch::Name(name)) => {
                        write!(f, " WITH MEASUREMENT = {}", Ident(name))?
                    }
                    Some(MeasurementMatch::Regex(regex)) => {
                        f.write_str(" WITH MEASUREMENT =~ ")?;
                        write_regex(f, regex)?;
                    }
                    None => {}
                }
                if let Some(condition) = condition {
                    write!(f, " WHERE {condition}")?;
                }
                if *limit > 0 {
                    write!(f, " LIMIT {limit}")?;
                }
                if *offset > 0 {
                    write!(f, " OFFSET {offset}")?;
                }
                Ok(())
            }
            Statement::ShowFieldKeys {
                database,
                sources,
                limit,
                offset,
            } => {
                f.write_str("SHOW FIELD KEYS")?;
                write_on(f, database)?;
                write_from(f, sources)?;
                write_limits(f, *limit, *offset)
            }
            Statement::ShowTagKeys {
                database,
                sources,
                condition,
                limit,
                offset,
            } => {
                f.write_str("SHOW TAG KEYS")?;
                write_on(f, database)?;
                write_from(f, sources)?;
                write_where(f, condition)?;
                write_limits(f, *limit, *offset)
            }
            Statement::ShowTagValues {
                database,
                sources,
                keys,
                condition,
                limit,
                offset,
            } => {
                f.write_str("SHOW TAG VALUES")?;
                write_on(f, database)?;
                write_from(f, sources)?;
                write!(f, " WITH KEY {keys}")?;
                write_where(f, condition)?;
                write_limits(f, *limit, *offset)
            }
            Statement::ShowTagValuesCardinality {
                database,
                exact,
                sources,
                keys,
                condition,
            } => {
                f.write_str("SHOW TAG VALUES ")?;
                write_cardinality(f, *exact)?;
                write_on(f, database)?;
                write_from(f, sources)?;
                write!(f, " WITH KEY {keys}")?;
                write_where(f, condition)
            }
            Statement::ShowFieldKeyCardinality {
                database,
                exact,
                sources,
                condition,
            } => {
                f.write_str("SHOW FIELD KEY ")?;
                write_cardinality(f, *exact)?;
                write_on(f, database)?;
                write_from(f, sources)?;
                write_where(f, condition)
            }
            Statement::ShowTagKeyCardinality {
                database,
                exact,
                sources,
                condition,
            } => {
                f.write_str("SHOW TAG KEY ")?;
                write_cardinality(f, *exact)?;
                write_on(f, database)?;
                write_from(f, sources)?;
                write_where(f, condition)
            }
            Statement::ShowSeries {
                database,
                sources,
                condition,
                limit,
                offset,
            } => {
                f.write_str("SHOW SERIES")?;
                write_on(f, database)?;
                write_from(f, sources)?;
                if let Some(condition) = condition {
                    write!(f, " WHERE {condition}")?;
                }
                write_limits(f, *limit, *offset)
            }
            Statement::DropMeasurement { name } => write!(f, "DROP MEASUREMENT {}", Ident(name)),
            Statement::Delete { source, condition } => {
                f.write_str("DELETE")?;
                if let Some(source) = source {
                    write!(f, " FROM {source}")?;
                }
                if let Some(condition) = condition {
                    write!(f, " WHERE {condition}")?;
                }
                Ok(())
            }
            Statement::ShowSeriesCardinality {
                database,
                exact,
                sources,
                condition,
            } => {
                f.write_str(if *exact {
                    "SHOW SERIES EXACT CARDINALITY"
                } else {
                    "SHOW SERIES CARDINALITY"
                })?;
                write_on(f, database)?;
                write_from(f, sources)?;
                if let Some(condition) = condition {
                    write!(f, " WHERE {condition}")?;
                }
                Ok(())
            }
            Statement::ShowMeasurementCardinality { database, exact } => {
                f.write_str(if *exact {
                    "SHOW MEASUREMENT EXACT CARDINALITY"
                } else {
                    "SHOW MEASUREMENT CARDINALITY"
                })?;
                write_on(f, database)
            }
            Statement::DropSeries { sources, condition } => {
                f.write_str("DROP SERIES")?;
                write_from(f, sources)?;
                if let Some(condition) = condition {
                    write!(f, " WHERE {condition}")?;
                }
                Ok(())
            }
        }
    }
}
