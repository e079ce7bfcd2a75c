//! Recursive-descent InfluxQL parser with InfluxDB's error texts
//! (`found X, expected Y at line L, char C`).

use super::ast::*;
use super::lexer::{parse_duration, Kind, Lexer, Token};
use super::zone::Zone;
use super::ParseError;

pub struct Parser<'a> {
    lexer: Lexer<'a>,
    pos: usize,
}

type Result<T> = std::result::Result<T, ParseError>;

fn error(message: impl Into<String>) -> ParseError {
    ParseError {
        message: message.into(),
    }
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str) -> Self {
        Parser {
            lexer: Lexer::new(text),
            pos: 0,
        }
    }

    fn peek(&self) -> Token {
        self.lexer.token(self.pos)
    }

    fn next(&mut self) -> Token {
        let token = self.peek();
        self.pos = token.end;
        token
    }

    fn unexpected(&self, token: &Token, expected: &str) -> ParseError {
        let found = match token.kind {
            Kind::Eof => "EOF".to_string(),
            _ => token.text.clone(),
        };
        let (line, mut column) = self.lexer.position(token.start);
        if matches!(token.kind, Kind::Str | Kind::BadString) {
            // InfluxDB places a string token one character earlier.
            column = column.saturating_sub(1).max(1);
        }
        if token.kind == Kind::Eof {
            // And the end of the query one character later.
            column += 1;
        }
        error(format!(
            "found {found}, expected {expected} at line {line}, char {column}"
        ))
    }

    fn is_keyword(token: &Token, keyword: &str) -> bool {
        token.kind == Kind::Ident && token.text.eq_ignore_ascii_case(keyword)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        Self::is_keyword(&self.peek(), keyword)
    }

    /// Whether the next two tokens are `first` and `second`.
    fn peek_keywords(&self, first: &str, second: &str) -> bool {
        let token = self.peek();
        Self::is_keyword(&token, first) && Self::is_keyword(&self.lexer.token(token.end), second)
    }

    fn accept_keyword(&mut self, keyword: &str) -> bool {
        if self.peek_keyword(keyword) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<()> {
        let token = self.next();
        if Self::is_keyword(&token, keyword) {
            Ok(())
        } else {
            Err(self.unexpected(&token, keyword))
        }
    }

    fn peek_punct(&self, punct: &str) -> bool {
        let token = self.peek();
        token.kind == Kind::Punct && token.text == punct
    }

    fn accept_punct(&mut self, punct: &str) -> bool {
        if self.peek_punct(punct) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, punct: &str) -> Result<()> {
        let token = self.next();
        if token.kind == Kind::Punct && token.text == punct {
            Ok(())
        } else {
            Err(self.unexpected(&token, punct))
        }
    }

    fn ident(&mut self) -> Result<String> {
        let token = self.next();
        match token.kind {
            Kind::Ident if !super::lexer::is_keyword(&token.text) => Ok(token.text),
            Kind::QuotedIdent => Ok(token.text),
            _ => Err(self.unexpected(&token, "identifier")),
        }
    }

    fn integer(&mut self) -> Result<i64> {
        let token = self.next();
        if token.kind == Kind::Integer {
            if let Ok(value) = token.text.parse::<i64>() {
                return Ok(value);
            }
            return Err(error(format!(
                "unable to parse integer at line 1, char {}",
                token.start + 1
            )));
        }
        Err(self.unexpected(&token, "integer"))
    }

    fn duration(&mut self) -> Result<i64> {
        let token = self.next();
        match token.kind {
            Kind::Duration => parse_duration(&token.text).ok_or_else(|| error("invalid duration")),
            Kind::Ident if token.text.eq_ignore_ascii_case("INF") => Ok(0),
            _ => Err(self.unexpected(&token, "duration")),
        }
    }

    pub fn parse_query(&mut self) -> Result<Vec<Statement>> {
        let mut statements = Vec::new();
        loop {
            while self.accept_punct(";") {}
            if self.peek().kind == Kind::Eof {
                break;
            }
            statements.push(self.statement()?);
            let token = self.peek();
            if token.kind != Kind::Eof && !(token.kind == Kind::Punct && token.text == ";") {
                return Err(self.unexpected(&token, ";"));
            }
        }
        Ok(statements)
    }

    fn statement(&mut self) -> Result<Statement> {
        let token = self.next();
        let keyword = if token.kind == Kind::Ident {
            token.text.to_ascii_uppercase()
        } else {
            String::new()
        };
        match keyword.as_str() {
            "SELECT" => Ok(Statement::Select(Box::new(self.select_body()?))),
            "CREATE" => self.create(),
            "DROP" => self.drop_statement(),
            "SHOW" => self.show(),
            "ALTER" => self.alter(),
            "DELETE" => {
                let source = if self.accept_keyword("FROM") {
                    Some(match self.lexer.regex(self.pos) {
                        Some(_) => MeasurementMatch::Regex(self.regex()?),
                        None => MeasurementMatch::Name(self.ident()?),
                    })
                } else {
                    None
                };
                let condition = if self.accept_keyword("WHERE") {
                    Some(self.expr()?)
                } else {
                    None
                };
                if source.is_none() && condition.is_none() {
                    let token = self.peek();
                    return Err(self.unexpected(&token, "FROM, WHERE"));
                }
                Ok(Statement::Delete { source, condition })
            }
            _ => Err(self.unexpected(
                &token,
                "SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL",
            )),
        }
    }

    fn create(&mut self) -> Result<Statement> {
        let token = self.next();
        if Self::is_keyword(&token, "DATABASE") {
            let name = self.ident()?;
            let mut rp = None;
            if self.accept_keyword("WITH") {
                let mut options = RetentionPolicyOptions::default();
                let mut any = false;
                if self.accept_keyword("DURATION") {
                    options.duration = Some(self.duration()?);
                    any = true;
                }
                if self.accept_keyword("REPLICATION") {
                    options.replication = Some(self.replication()?);
                    any = true;
                }
                if self.accept_keyword("SHARD") {
                    self.expect_keyword("DURATION")?;
                    options.shard_duration = Some(self.duration()?);
                    any = true;
                }
                if self.accept_keyword("NAME") {
                    options.name = Some(self.ident()?);
                    any = true;
                }
                if !any {
                    let token = self.peek();
                    return Err(self.unexpected(&token, "DURATION, REPLICATION, SHARD, NAME"));
                }
                rp = Some(options);
            }
            return Ok(Statement::CreateDatabase { name, rp });
        }
        if Self::is_keyword(&token, "RETENTION") {
            self.expect_keyword("POLICY")?;
            let name = self.ident()?;
            self.expect_keyword("ON")?;
            let database = self.ident()?;
            self.expect_keyword("DURATION")?;
            let duration = self.duration()?;
            self.expect_keyword("REPLICATION")?;
            let replication = self.replication()?;
            let mut shard_duration = None;
            if self.accept_keyword("SHARD") {
                self.expect_keyword("DURATION")?;
                shard_duration = Some(self.duration()?);
            }
            let default = self.accept_keyword("DEFAULT");
            return Ok(Statement::CreateRetentionPolicy {
                name,
                database,
                duration,
                replication,
                shard_duration,
                default,
            });
        }
        Err(self.unexpected(
            &token,
            "CONTINUOUS, DATABASE, USER, RETENTION, SUBSCRIPTION",
        ))
    }

    fn replication(&mut self) -> Result<u32> {
        let token = self.peek();
        let value = self.integer()?;
        u32::try_from(value)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| self.unexpected(&token, "number > 0"))
    }

    fn alter(&mut self) -> Result<Statement> {
        self.expect_keyword("RETENTION")?;
        self.expect_keyword("POLICY")?;
        let name = self.ident()?;
        self.expect_keyword("ON")?;
        let database = self.ident()?;
        let (mut duration, mut replication, mut shard_duration, mut default) =
            (None, None, None, false);
        loop {
            if self.accept_keyword("DURATION") {
                duration = Some(self.duration()?);
            } else if self.accept_keyword("REPLICATION") {
                replication = Some(self.replication()?);
            } else if self.accept_keyword("SHARD") {
                self.expect_keyword("DURATION")?;
                shard_duration = Some(self.duration()?);
            } else if self.accept_keyword("DEFAULT") {
                default = true;
            } else {
                break;
            }
        }
        if duration.is_none() && replication.is_none() && shard_duration.is_none() && !default {
            let token = self.peek();
            return Err(self.unexpected(&token, "DURATION, REPLICATION, SHARD, DEFAULT"));
        }
        Ok(Statement::AlterRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        })
    }

    fn drop_statement(&mut self) -> Result<Statement> {
        let token = self.next();
        if Self::is_keyword(&token, "DATABASE") {
            return Ok(Statement::DropDatabase {
                name: self.ident()?,
            });
        }
        if Self::is_keyword(&token, "RETENTION") {
            self.expect_keyword("POLICY")?;
            let name = self.ident()?;
            self.expect_keyword("ON")?;
            let database = self.ident()?;
            return Ok(Statement::DropRetentionPolicy { name, database });
        }
        if Self::is_keyword(&token, "MEASUREMENT") {
            return Ok(Statement::DropMeasurement {
                name: self.ident()?,
            });
        }
        if Self::is_keyword(&token, "SERIES") {
            let sources = self.optional_from()?;
            let condition = if self.accept_keyword("WHERE") {
                Some(self.expr()?)
            } else {
                None
            };
            if sources.is_empty() && condition.is_none() {
                let token = self.peek();
                return Err(self.unexpected(&token, "FROM, WHERE"));
            }
            return Ok(Statement::DropSeries { sources, condition });
        }
        Err(self.unexpected(
            &token,
            "CONTINUOUS, MEASUREMENT, RETENTION, SERIES, SHARD, SUBSCRIPTION, USER",
        ))
    }

    fn on_database(&mut self) -> Result<Option<String>> {
        if self.accept_keyword("ON") {
            Ok(Some(self.ident()?))
        } else {
            Ok(None)
        }
    }

    fn show(&mut self) -> Result<Statement> {
        let token = self.next();
        let keyword = if token.kind == Kind::Ident {
            token.text.to_ascii_uppercase()
        } else {
            String::new()
        };
        match keyword.as_str() {
            "DATABASES" => Ok(Statement::ShowDatabases),
            "USERS" => Ok(Statement::ShowUsers),
            "RETENTION" => {
                self.expect_keyword("POLICIES")?;
                Ok(Statement::ShowRetentionPolicies { database: self.on_database()? })
            }
            "MEASUREMENTS" => {
                let database = self.on_database()?;
                let mut source = None;
                if self.accept_keyword("WITH") {
                    self.expect_keyword("MEASUREMENT")?;
                    if self.accept_punct("=~") {
                        source = Some(MeasurementMatch::Regex(self.regex()?));
                    } else {
                        self.expect_punct("=")?;
                        source = Some(match self.lexer.regex(self.pos) {
                            Some(_) => MeasurementMatch::Regex(self.regex()?),
                            None => MeasurementMatch::Name(self.ident()?),
                        });
                    }
                }
                let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowMeasurements { database, source, condition, limit, offset })
            }
            "FIELD" => {
                if self.accept_keyword("KEY") {
                    let exact = self.exact_cardinality()?;
                    let database = self.on_database()?;
                    let sources = self.optional_from()?;
                    let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                    self.limit_offset()?;
                    return Ok(Statement::ShowFieldKeyCardinality { database, exact, sources, condition });
                }
                if !self.accept_keyword("KEYS") {
                    let token = self.peek();
                    return Err(self.unexpected(&token, "KEY, KEYS"));
                }
                let database = self.on_database()?;
                let sources = self.optional_from()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowFieldKeys { database, sources, limit, offset })
            }
            "TAG" => {
                let token = self.next();
                if Self::is_keyword(&token, "KEY") {
                    let exact = self.exact_cardinality()?;
                    let database = self.on_database()?;
                    let sources = self.optional_from()?;
                    let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                    self.limit_offset()?;
                    return Ok(Statement::ShowTagKeyCardinality { database, exact, sources, condition });
                }
                if Self::is_keyword(&token, "KEYS") {
                    let database = self.on_database()?;
                    let sources = self.optional_from()?;
                    let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                    let (limit, offset) = self.limit_offset()?;
                    // InfluxDB 1.6 takes SLIMIT and SOFFSET here and ignores them.
                    if self.accept_keyword("SLIMIT") {
                        self.unsigned()?;
                    }
                    if self.accept_keyword("SOFFSET") {
                        self.unsigned()?;
                    }
                    return Ok(Statement::ShowTagKeys { database, sources, condition, limit, offset });
                }
                if Self::is_keyword(&token, "VALUES") {
                    let cardinality = if self.peek_keyword("EXACT") || self.peek_keyword("CARDINALITY") {
                        let exact = self.accept_keyword("EXACT");
                        self.expect_keyword("CARDINALITY")?;
                        Some(exact)
                    } else {
                        None
                    };
                    let database = self.on_database()?;
                    let sources = self.optional_from()?;
                    self.expect_keyword("WITH")?;
                    self.expect_keyword("KEY")?;
                    let keys = if self.accept_punct("=~") {
                        TagKeyMatch::Regex(self.regex()?)
                    } else if self.accept_punct("!~") {
                        TagKeyMatch::NotRegex(self.regex()?)
                    } else if self.accept_punct("=") {
                        TagKeyMatch::Eq(self.ident()?)
                    } else if self.accept_punct("!=") || self.accept_punct("<>") {
                        TagKeyMatch::Neq(self.ident()?)
                    } else if self.accept_keyword("IN") {
                        self.expect_punct("(")?;
                        let mut keys = vec![self.ident()?];
                        while self.accept_punct(",") {
                            keys.push(self.ident()?);
                        }
                        self.expect_punct(")")?;
                        TagKeyMatch::In(keys)
                    } else {
                        let token = self.peek();
                        return Err(self.unexpected(&token, "=, !=, =~, !~, IN"));
                    };
                    let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                    let (limit, offset) = self.limit_offset()?;
                    if let Some(exact) = cardinality {
                        return Ok(Statement::ShowTagValuesCardinality { database, exact, sources, keys, condition });
                    }
                    return Ok(Statement::ShowTagValues { database, sources, keys, condition, limit, offset });
                }
                Err(self.unexpected(&token, "KEY, KEYS, VALUES"))
            }
            "SERIES" if self.peek_keyword("CARDINALITY") || self.peek_keywords("EXACT", "CARDINALITY") => {
                let exact = self.accept_keyword("EXACT");
                self.expect_keyword("CARDINALITY")?;
                let database = self.on_database()?;
                let sources = self.optional_from()?;
                let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                Ok(Statement::ShowSeriesCardinality { database, exact, sources, condition })
            }
            "MEASUREMENT" => {
                let exact = self.exact_cardinality()?;
                let database = self.on_database()?;
                Ok(Statement::ShowMeasurementCardinality { database, exact })
            }
            "SERIES" => {
                // `SHOW SERIES EXACT` without CARDINALITY: InfluxDB 1.6 lists the series.
                self.accept_keyword("EXACT");
                let database = self.on_database()?;
                let sources = self.optional_from()?;
                let condition = if self.accept_keyword("WHERE") { Some(self.expr()?) } else { None };
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowSeries { database, sources, condition, limit, offset })
            }
            _ => Err(self.unexpected(
                &token,
                "CONTINUOUS, DATABASES, DIAGNOSTICS, FIELD, GRANTS, MEASUREMENT, MEASUREMENTS, QUERIES, RETENTION, SERIES, SHARD, SHARDS, STATS, SUBSCRIPTIONS, TAG, USERS",
            )),
        }
    }

    /// `[EXACT] CARDINALITY`: whether EXACT was given.
    fn exact_cardinality(&mut self) -> Result<bool> {
        if self.accept_keyword("EXACT") {
            self.expect_keyword("CARDINALITY")?;
            return Ok(true);
        }
        if !self.accept_keyword("CARDINALITY") {
            let token = self.peek();
            return Err(self.unexpected(&token, "EXACT, CARDINALITY"));
        }
        Ok(false)
    }

    fn limit_offset(&mut self) -> Result<(u64, u64)> {
        let mut limit = 0;
        let mut offset = 0;
        if self.accept_keyword("LIMIT") {
            limit = self.unsigned()?;
        }
        if self.accept_keyword("OFFSET") {
            offset = self.unsigned()?;
        }
        Ok((limit, offset))
    }

    fn unsigned(&mut self) -> Result<u64> {
        let token = self.peek();
        let value = self.integer()?;
        u64::try_from(value).map_err(|_| self.unexpected(&token, "integer"))
    }

    fn optional_from(&mut self) -> Result<Vec<Source>> {
        if self.accept_keyword("FROM") {
            self.sources()
        } else {
            Ok(Vec::new())
        }
    }

    fn regex(&mut self) -> Result<String> {
        let Some(token) = self.lexer.regex(self.pos) else {
            let token = self.peek();
            return Err(self.unexpected(&token, "regex"));
        };
        if token.kind != Kind::Regex {
            return Err(self.unexpected(&token, "regex"));
        }
        if let Err(problem) = regex::Regex::new(&token.text) {
            let (line, column) = self.lexer.position(token.start);
            let detail = problem.to_string();
            let detail = detail
                .lines()
                .last()
                .unwrap_or("invalid regex")
                .trim()
                .to_string();
            return Err(error(format!(
                "error parsing regexp: {detail} at line {line}, char {column}"
            )));
        }
        self.pos = token.end;
        Ok(token.text)
    }

    pub fn select_body(&mut self) -> Result<SelectStatement> {
        let mut fields = vec![self.field()?];
        while self.accept_punct(",") {
            fields.push(self.field()?);
        }
        self.expect_keyword("FROM")?;
        let sources = self.sources()?;
        let condition = if self.accept_keyword("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut dimensions = Vec::new();
        if self.accept_keyword("GROUP") {
            self.expect_keyword("BY")?;
            dimensions.push(self.dimension()?);
            while self.accept_punct(",") {
                dimensions.push(self.dimension()?);
            }
        }
        let mut fill = None;
        if self.peek_keyword("fill") {
            self.next();
            self.expect_punct("(")?;
            let token = self.next();
            fill = Some(match token.kind {
                Kind::Ident if token.text.eq_ignore_ascii_case("null") => Fill::Null,
                Kind::Ident if token.text.eq_ignore_ascii_case("none") => Fill::None,
                Kind::Ident if token.text.eq_ignore_ascii_case("previous") => Fill::Previous,
                Kind::Ident if token.text.eq_ignore_ascii_case("linear") => Fill::Linear,
                Kind::Integer => Fill::Integer(
                    token
                        .text
                        .parse()
                        .map_err(|_| error("invalid fill option"))?,
                ),
                Kind::Number => Fill::Number(
                    token
                        .text
                        .parse()
                        .map_err(|_| error("invalid fill option"))?,
                ),
                Kind::Punct if token.text == "-" => {
                    let number = self.next();
                    match number.kind {
                        Kind::Integer => Fill::Integer(
                            -number
                                .text
                                .parse::<i64>()
                                .map_err(|_| error("invalid fill option"))?,
                        ),
                        Kind::Number => Fill::Number(
                            -number
                                .text
                                .parse::<f64>()
                                .map_err(|_| error("invalid fill option"))?,
                        ),
                        _ => return Err(self.unexpected(&number, "number")),
                    }
                }
                _ => {
                    return Err(error(format!(
                        "fill must be a function call: {}",
                        token.text
                    )))
                }
            });
            self.expect_punct(")")?;
        }
        let mut descending = false;
        if self.accept_keyword("ORDER") {
            self.expect_keyword("BY")?;
            let token = self.next();
            if !(token.kind == Kind::Ident && token.text.eq_ignore_ascii_case("time")) {
                return Err(error("only ORDER BY time supported at this time"));
            }
            if self.accept_keyword("DESC") {
                descending = true;
            } else {
                self.accept_keyword("ASC");
            }
            if self.peek_punct(",") {
                return Err(error("only ORDER BY time supported at this time"));
            }
        }
        let mut statement = SelectStatement {
            fields,
            sources,
            condition,
            dimensions,
            fill,
            descending,
            limit: 0,
            offset: 0,
            slimit: 0,
            soffset: 0,
            timezone: None,
        };
        if self.accept_keyword("LIMIT") {
            statement.limit = self.unsigned()?;
        }
        if self.accept_keyword("OFFSET") {
            statement.offset = self.unsigned()?;
        }
        if self.accept_keyword("SLIMIT") {
            statement.slimit = self.unsigned()?;
        }
        if self.accept_keyword("SOFFSET") {
            statement.soffset = self.unsigned()?;
        }
        if self.peek_keyword("tz") {
            self.next();
            self.expect_punct("(")?;
            let token = self.next();
            if token.kind != Kind::Str {
                return Err(self.unexpected(&token, "string"));
            }
            // As InfluxDB: an unknown zone fails the whole query (400).
            let zone = Zone::load(&token.text).ok_or_else(|| ParseError {
                message: format!("unable to find time zone {}", token.text),
            })?;
            statement.timezone = Some(zone);
            self.expect_punct(")")?;
        }
        Ok(statement)
    }

    fn field(&mut self) -> Result<Field> {
        let expr = self.expr()?;
        let alias = if self.accept_keyword("AS") {
            Some(self.ident()?)
        } else {
            None
        };
        Ok(Field { expr, alias })
    }

    fn sources(&mut self) -> Result<Vec<Source>> {
        let mut sources = vec![self.source()?];
        while self.accept_punct(",") {
            sources.push(self.source()?);
        }
        Ok(sources)
    }

    fn source(&mut self) -> Result<Source> {
        if self.accept_punct("(") {
            self.expect_keyword("SELECT")?;
            let select = self.select_body()?;
            self.expect_punct(")")?;
            return Ok(Source::Subquery(Box::new(select)));
        }
        // Up to three dot-separated segments: [db.][rp.]measurement; the
        // last may be a regex.
        let mut segments: Vec<Option<String>> = Vec::new();
        loop {
            if self.lexer.regex(self.pos).is_some() {
                let regex = self.regex()?;
                return Ok(source_from(segments, MeasurementMatch::Regex(regex)));
            }
            let token = self.peek();
            let segment = match token.kind {
                Kind::Punct if token.text == "." => None,
                _ => Some(self.ident()?),
            };
            if segment.is_none() {
                // an empty rp segment: `db..m`
                segments.push(None);
                self.next();
                continue;
            }
            if self.peek_punct(".") && segments.len() < 2 {
                self.next();
                segments.push(segment);
                continue;
            }
            let name = segment.unwrap_or_default();
            return Ok(source_from(segments, MeasurementMatch::Name(name)));
        }
    }

    fn dimension(&mut self) -> Result<Dimension> {
        if self.accept_punct("*") {
            return Ok(Dimension::Wildcard);
        }
        if self.lexer.regex(self.pos).is_some() {
            return Ok(Dimension::Regex(self.regex()?));
        }
        let token = self.peek();
        if token.kind == Kind::Ident && token.text.eq_ignore_ascii_case("time") {
            self.next();
            if self.accept_punct("(") {
                let interval = self.group_duration()?;
                let mut offset = None;
                if self.accept_punct(",") {
                    let negative = self.accept_punct("-");
                    let value = self.group_duration()?;
                    offset = Some(if negative { -value } else { value });
                }
                self.expect_punct(")")?;
                return Ok(Dimension::Time { interval, offset });
            }
            return Ok(Dimension::Tag("time".into()));
        }
        Ok(Dimension::Tag(self.ident()?))
    }

    fn group_duration(&mut self) -> Result<i64> {
        let token = self.next();
        match token.kind {
            Kind::Duration => parse_duration(&token.text).ok_or_else(|| error("invalid duration")),
            _ => Err(error("invalid duration")),
        }
    }

    pub fn expr(&mut self) -> Result<Expr> {
        self.binary(1)
    }

    fn peek_operator(&self) -> Option<BinaryOp> {
        let token = self.peek();
        match token.kind {
            Kind::Punct => Some(match token.text.as_str() {
                "+" => BinaryOp::Add,
                "-" => BinaryOp::Sub,
                "*" => BinaryOp::Mul,
                "/" => BinaryOp::Div,
                "%" => BinaryOp::Mod,
                "&" => BinaryOp::BitAnd,
                "|" => BinaryOp::BitOr,
                "^" => BinaryOp::BitXor,
                "=" => BinaryOp::Eq,
                "!=" | "<>" => BinaryOp::Neq,
                "<" => BinaryOp::Lt,
                "<=" => BinaryOp::Lte,
                ">" => BinaryOp::Gt,
                ">=" => BinaryOp::Gte,
                "=~" => BinaryOp::RegexMatch,
                "!~" => BinaryOp::RegexNotMatch,
                _ => return None,
            }),
            Kind::Ident if token.text.eq_ignore_ascii_case("AND") => Some(BinaryOp::And),
            Kind::Ident if token.text.eq_ignore_ascii_case("OR") => Some(BinaryOp::Or),
            _ => None,
        }
    }

    fn binary(&mut self, min_precedence: u8) -> Result<Expr> {
        let mut lhs = self.unary()?;
        while let Some(op) = self.peek_operator() {
            let precedence = op.precedence();
            if precedence < min_precedence {
                break;
            }
            self.next();
            let rhs = if matches!(op, BinaryOp::RegexMatch | BinaryOp::RegexNotMatch) {
                Expr::Regex(self.regex()?)
            } else {
                self.binary(precedence + 1)?
            };
            lhs = Expr::binary(op, lhs, rhs);
        }
        Ok(lhs)
    }

    fn data_type(&mut self) -> Result<Option<DataType>> {
        if !self.accept_punct("::") {
            return Ok(None);
        }
        let token = self.next();
        let data_type = match token.text.to_ascii_lowercase().as_str() {
            "float" => DataType::Float,
            "integer" => DataType::Integer,
            "unsigned" => DataType::Unsigned,
            "string" => DataType::String,
            "boolean" => DataType::Boolean,
            "field" => DataType::Field,
            "tag" => DataType::Tag,
            _ => {
                return Err(self.unexpected(
                    &token,
                    "float, integer, unsigned, string, boolean, field, tag",
                ))
            }
        };
        Ok(Some(data_type))
    }

    fn unary(&mut self) -> Result<Expr> {
        let token = self.peek();
        if token.kind == Kind::Punct && token.text == "-" {
            self.next();
            let next = self.peek();
            return match next.kind {
                Kind::Integer | Kind::Number | Kind::Duration => match self.unary()? {
                    Expr::Integer(value) => Ok(Expr::Integer(-value)),
                    Expr::Number(value) => Ok(Expr::Number(-value)),
                    Expr::Duration(value) => Ok(Expr::Duration(-value)),
                    other => Ok(Expr::binary(BinaryOp::Mul, Expr::Integer(-1), other)),
                },
                _ => {
                    let operand = self.unary()?;
                    Ok(Expr::binary(BinaryOp::Mul, Expr::Integer(-1), operand))
                }
            };
        }
        if token.kind == Kind::Punct && token.text == "+" {
            self.next();
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        if self.lexer.regex(self.pos).is_some() && self.peek_punct("/") {
            return Ok(Expr::Regex(self.regex()?));
        }
        let token = self.next();
        const EXPECTED: &str = "identifier, string, number, bool";
        match token.kind {
            Kind::Punct if token.text == "(" => {
                let inner = self.expr()?;
                self.expect_punct(")")?;
                Ok(Expr::Paren(Box::new(inner)))
            }
            Kind::Punct if token.text == "*" => Ok(Expr::Wildcard {
                data_type: self.data_type()?,
            }),
            Kind::Ident if token.text.eq_ignore_ascii_case("true") => Ok(Expr::Boolean(true)),
            Kind::Ident if token.text.eq_ignore_ascii_case("false") => Ok(Expr::Boolean(false)),
            Kind::Ident if !super::lexer::is_keyword(&token.text) => {
                if self.accept_punct("(") {
                    let mut args = Vec::new();
                    if !self.accept_punct(")") {
                        args.push(self.expr()?);
                        while self.accept_punct(",") {
                            args.push(self.expr()?);
                        }
                        self.expect_punct(")")?;
                    }
                    return Ok(Expr::Call {
                        name: token.text.to_ascii_lowercase(),
                        args,
                    });
                }
                Ok(Expr::VarRef {
                    name: token.text,
                    data_type: self.data_type()?,
                })
            }
            Kind::Ident if token.text.eq_ignore_ascii_case("distinct") => {
                // `distinct(x)` is a call like any other; `DISTINCT x` is `distinct(x)`.
                if self.accept_punct("(") {
                    let mut args = Vec::new();
                    if !self.accept_punct(")") {
                        args.push(self.expr()?);
                        while self.accept_punct(",") {
                            args.push(self.expr()?);
                        }
                        self.expect_punct(")")?;
                    }
                    return Ok(Expr::Call {
                        name: "distinct".into(),
                        args,
                    });
                }
                let arg = self.expr()?;
                Ok(Expr::Call {
                    name: "distinct".into(),
                    args: vec![arg],
                })
            }
            Kind::QuotedIdent => Ok(Expr::VarRef {
                name: token.text,
                data_type: self.data_type()?,
            }),
            Kind::Str => Ok(Expr::String(token.text)),
            Kind::Integer => token
                .text
                .parse::<i64>()
                .map(Expr::Integer)
                .or_else(|_| token.text.parse::<f64>().map(Expr::Number))
                .map_err(|_| {
                    error(format!(
                        "unable to parse integer at line 1, char {}",
                        token.start + 1
                    ))
                }),
            Kind::Number => token.text.parse::<f64>().map(Expr::Number).map_err(|_| {
                error(format!(
                    "unable to parse number at line 1, char {}",
                    token.start + 1
                ))
            }),
            Kind::Duration => parse_duration(&token.text)
                .map(Expr::Duration)
                .ok_or_else(|| error("invalid duration")),
            Kind::BadString => {
                let (line, column) = self.lexer.position(token.start);
                Err(error(format!(
                    "found {}, expected {EXPECTED} at line {line}, char {}",
                    token.text,
                    column.saturating_sub(1).max(1)
                )))
            }
            Kind::BadEscape => {
                let (line, column) = self.lexer.position(token.start);
                Err(error(format!("bad escape at line {line}, char {column}")))
            }
            _ => Err(self.unexpected(&token, EXPECTED)),
        }
    }
}

fn source_from(segments: Vec<Option<String>>, name: MeasurementMatch) -> Source {
    let (database, rp) = match segments.len() {
        0 => (None, None),
        1 => (None, segments.into_iter().next().flatten()),
        _ => {
            let mut iter = segments.into_iter();
            (iter.next().flatten(), iter.next().flatten())
        }
    };
    Source::Measurement { database, rp, name }
}
