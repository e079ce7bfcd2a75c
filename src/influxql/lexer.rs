//! The InfluxQL scanner. Tokens carry their byte offset so that errors can say
//! `at line L, char C` as InfluxDB does. Regular expressions are scanned on
//! the parser's demand (a `/` is division or a regex depending on context).

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A bare identifier or keyword (keywords are matched case-insensitively).
    Ident,
    /// A double-quoted identifier (never a keyword).
    QuotedIdent,
    Str,
    Integer,
    Number,
    Duration,
    Regex,
    /// Operators and punctuation; the text is the token.
    Punct,
    /// An unterminated string; the text is its content.
    BadString,
    /// A string with an invalid escape.
    BadEscape,
    Illegal,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub kind: Kind,
    /// For identifiers and strings: the unescaped value; otherwise the source text.
    pub text: String,
    pub start: usize,
    pub end: usize,
}

pub const KEYWORDS: &[&str] = &[
    "ALL",
    "ALTER",
    "ANALYZE",
    "ANY",
    "AS",
    "ASC",
    "BEGIN",
    "BY",
    "CARDINALITY",
    "CREATE",
    "CONTINUOUS",
    "DATABASE",
    "DATABASES",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DESTINATIONS",
    "DIAGNOSTICS",
    "DISTINCT",
    "DROP",
    "DURATION",
    "END",
    "EVERY",
    "EXACT",
    "EXPLAIN",
    "FIELD",
    "FOR",
    "FROM",
    "GRANT",
    "GRANTS",
    "GROUP",
    "GROUPS",
    "IN",
    "INF",
    "INSERT",
    "INTO",
    "KEY",
    "KEYS",
    "KILL",
    "LIMIT",
    "MEASUREMENT",
    "MEASUREMENTS",
    "NAME",
    "OFFSET",
    "ON",
    "ORDER",
    "PASSWORD",
    "POLICIES",
    "POLICY",
    "PRIVILEGES",
    "QUERIES",
    "QUERY",
    "READ",
    "REPLICATION",
    "RESAMPLE",
    "RETENTION",
    "REVOKE",
    "SELECT",
    "SERIES",
    "SET",
    "SHARD",
    "SHARDS",
    "SLIMIT",
    "SOFFSET",
    "STATS",
    "SUBSCRIPTION",
    "SUBSCRIPTIONS",
    "TAG",
    "TO",
    "USER",
    "USERS",
    "VALUES",
    "WHERE",
    "WITH",
    "WRITE",
    "AND",
    "OR",
    "TRUE",
    "FALSE",
];

pub fn is_keyword(word: &str) -> bool {
    KEYWORDS
        .iter()
        .any(|keyword| keyword.eq_ignore_ascii_case(word))
}

pub struct Lexer<'a> {
    pub src: &'a str,
}

const DURATION_UNITS: &[&str] = &["ns", "ms", "u", "µ", "s", "m", "h", "d", "w"];

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src }
    }

    fn char_at(&self, at: usize) -> Option<char> {
        self.src.get(at..).and_then(|rest| rest.chars().next())
    }

    pub fn skip_whitespace(&self, mut at: usize) -> usize {
        loop {
            match self.char_at(at) {
                Some(c) if c.is_whitespace() => at += c.len_utf8(),
                Some('-') if self.char_at(at + 1) == Some('-') => {
                    // line comment
                    while let Some(c) = self.char_at(at) {
                        at += c.len_utf8();
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some('/') if self.char_at(at + 1) == Some('*') => {
                    at += 2;
                    loop {
                        match self.char_at(at) {
                            None => return at,
                            Some('*') if self.char_at(at + 1) == Some('/') => {
                                at += 2;
                                break;
                            }
                            Some(c) => at += c.len_utf8(),
                        }
                    }
                }
                _ => return at,
            }
        }
    }

    /// The token starting at or after `at`.
    pub fn token(&self, at: usize) -> Token {
        let start = self.skip_whitespace(at);
        let Some(c) = self.char_at(start) else {
            return Token {
                kind: Kind::Eof,
                text: String::new(),
                start,
                end: start,
            };
        };
        let punct = |len: usize| Token {
            kind: Kind::Punct,
            text: self.src[start..start + len].to_string(),
            start,
            end: start + len,
        };
        let next = self.char_at(start + 1);
        match c {
            '"' => self.quoted(start, '"', Kind::QuotedIdent),
            '\'' => self.quoted(start, '\'', Kind::Str),
            '0'..='9' => self.number(start),
            '.' if next.is_some_and(|n| n.is_ascii_digit()) => self.number(start),
            c if c.is_alphabetic() || c == '_' => {
                let mut end = start;
                while let Some(c) = self.char_at(end) {
                    if c.is_alphanumeric() || c == '_' {
                        end += c.len_utf8();
                    } else {
                        break;
                    }
                }
                Token {
                    kind: Kind::Ident,
                    text: self.src[start..end].to_string(),
                    start,
                    end,
                }
            }
            '=' if next == Some('~') => punct(2),
            '!' if next == Some('~') || next == Some('=') => punct(2),
            '<' if next == Some('>') || next == Some('=') => punct(2),
            '>' if next == Some('=') => punct(2),
            ':' if next == Some(':') => punct(2),
            '=' | '<' | '>' | '+' | '-' | '*' | '/' | '%' | '&' | '|' | '^' | ',' | '(' | ')'
            | ';' | '.' => punct(1),
            other => Token {
                kind: Kind::Illegal,
                text: other.to_string(),
                start,
                end: start + other.len_utf8(),
            },
        }
    }

    fn quoted(&self, start: usize, quote: char, kind: Kind) -> Token {
        let mut value = String::new();
        let mut at = start + 1;
        loop {
            match self.char_at(at) {
                None | Some('\n') => {
                    return Token {
                        kind: Kind::BadString,
                        text: value,
                        start,
                        end: at,
                    };
                }
                Some(c) if c == quote => {
                    return Token {
                        kind,
                        text: value,
                        start,
                        end: at + 1,
                    };
                }
                Some('\\') => {
                    match self.char_at(at + 1) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some(c) if c == quote => value.push(c),
                        Some('"') => value.push('"'),
                        Some('\'') => value.push('\''),
                        _ => {
                            return Token {
                                kind: Kind::BadEscape,
                                text: value,
                                start,
                                end: at + 2,
                            };
                        }
                    }
                    at += 2;
                }
                Some(c) => {
                    value.push(c);
                    at += c.len_utf8();
                }
            }
        }
    }

    fn number(&self, start: usize) -> Token {
        let mut end = start;
        while self.char_at(end).is_some_and(|c| c.is_ascii_digit()) {
            end += 1;
        }
        let mut is_float = false;
        if self.char_at(end) == Some('.')
            && self.char_at(end + 1).is_some_and(|c| c.is_ascii_digit())
        {
            is_float = true;
            end += 1;
            while self.char_at(end).is_some_and(|c| c.is_ascii_digit()) {
                end += 1;
            }
        }
        if !is_float {
            // A duration: digits followed by a unit, possibly repeated (1h30m).
            let mut at = end;
            let mut matched = false;
            loop {
                let unit = DURATION_UNITS
                    .iter()
                    .find(|unit| self.src[at..].starts_with(*unit))
                    .copied();
                let Some(unit) = unit else { break };
                let after = at + unit.len();
                if self
                    .char_at(after)
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
                {
                    break;
                }
                matched = true;
                at = after;
                let digits_start = at;
                while self.char_at(at).is_some_and(|c| c.is_ascii_digit()) {
                    at += 1;
                }
                if at == digits_start {
                    break;
                }
            }
            if matched {
                return Token {
                    kind: Kind::Duration,
                    text: self.src[start..at].to_string(),
                    start,
                    end: at,
                };
            }
        }
        if self.char_at(end).is_some_and(|c| c == 'e' || c == 'E') {
            let mut at = end + 1;
            if self.char_at(at).is_some_and(|c| c == '+' || c == '-') {
                at += 1;
            }
            if self.char_at(at).is_some_and(|c| c.is_ascii_digit()) {
                while self.char_at(at).is_some_and(|c| c.is_ascii_digit()) {
                    at += 1;
                }
                is_float = true;
                end = at;
            }
        }
        let kind = if is_float {
            Kind::Number
        } else {
            Kind::Integer
        };
        Token {
            kind,
            text: self.src[start..end].to_string(),
            start,
            end,
        }
    }

    /// A regex literal `/…/` starting at or after `at` (`\/` escapes a slash).
    pub fn regex(&self, at: usize) -> Option<Token> {
        let start = self.skip_whitespace(at);
        if self.char_at(start) != Some('/') {
            return None;
        }
        let mut value = String::new();
        let mut pos = start + 1;
        loop {
            match self.char_at(pos) {
                None | Some('\n') => {
                    return Some(Token {
                        kind: Kind::BadString,
                        text: value,
                        start,
                        end: pos,
                    })
                }
                Some('/') => {
                    return Some(Token {
                        kind: Kind::Regex,
                        text: value,
                        start,
                        end: pos + 1,
                    })
                }
                Some('\\') if self.char_at(pos + 1) == Some('/') => {
                    value.push('/');
                    pos += 2;
                }
                Some(c) => {
                    value.push(c);
                    pos += c.len_utf8();
                }
            }
        }
    }

    /// `line L, char C` of a byte offset (both 1-based).
    pub fn position(&self, at: usize) -> (usize, usize) {
        let before = &self.src[..at.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        (line, column)
    }
}

/// A duration literal (`10s`, `1h30m`, `5d`) in nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = DURATION_UNITS.iter().find(|unit| rest.starts_with(*unit))?;
        let scale: i64 = match *unit {
            "ns" => 1,
            "u" | "µ" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(scale)?)?;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// Go's `time.Duration.String()`: `168h0m0s`, `1m30s`, `500ms`, `0s`.
pub fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let negative = nanos < 0;
    let n = nanos.unsigned_abs();
    let mut out = String::new();
    if n < 1_000_000_000 {
        let (value, unit) = if n < 1_000 {
            (n.to_string(), "ns")
        } else if n < 1_000_000 {
            (trim_fraction(n, 1_000), "µs")
        } else {
            (trim_fraction(n, 1_000_000), "ms")
        };
        out.push_str(&value);
        out.push_str(unit);
    } else {
        let hours = n / 3_600_000_000_000;
        let minutes = (n / 60_000_000_000) % 60;
        let seconds = trim_fraction(n % 60_000_000_000, 1_000_000_000);
        if hours > 0 {
            out.push_str(&format!("{hours}h{minutes}m{seconds}s"));
        } else if minutes > 0 {
            out.push_str(&format!("{minutes}m{seconds}s"));
        } else {
            out.push_str(&format!("{seconds}s"));
        }
    }
    if negative {
        out.insert(0, '-');
    }
    out
}

fn trim_fraction(n: u64, unit: u64) -> String {
    let whole = n / unit;
    let fraction = n % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The shortest duration literal for nanoseconds (for printing statements).
pub fn format_duration_literal(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    for (unit, scale) in [
        ("w", 604_800_000_000_000i64),
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("u", 1_000),
    ] {
        if nanos % scale == 0 {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("7d"), Some(604_800_000_000_000));
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(format_go_duration(604_800_000_000_000), "168h0m0s");
        assert_eq!(format_go_duration(90_000_000_000), "1m30s");
        assert_eq!(format_go_duration(1_500_000), "1.5ms");
        assert_eq!(format_go_duration(0), "0s");
        assert_eq!(format_duration_literal(86_400_000_000_000), "1d");
    }

    #[test]
    fn tokens_and_positions() {
        let lexer = Lexer::new("SELECT \"a b\" FROM m WHERE x =~ /a\\/b/ AND t > 1.5e3");
        let token = lexer.token(6);
        assert_eq!(
            (token.kind, token.text.as_str()),
            (Kind::QuotedIdent, "a b")
        );
        let at = lexer.src.find('/').unwrap_or(0);
        assert_eq!(lexer.regex(at).map(|t| t.text), Some("a/b".to_string()));
        assert_eq!(lexer.token(lexer.src.len() - 5).kind, Kind::Number);
        assert_eq!(lexer.position(7), (1, 8));
    }
}
