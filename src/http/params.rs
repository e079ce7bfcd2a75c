//! Request parameters from the URL query string and, for POST forms, the body.

use std::collections::HashMap;

/// Parameters by name; a name given twice keeps its first value (Go's `FormValue`).
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from_query_string(query: &str) -> Params {
        let mut params = Params::default();
        params.extend(query.as_bytes());
        params
    }

    /// Add `application/x-www-form-urlencoded` pairs; earlier values win.
    pub fn extend(&mut self, encoded: &[u8]) {
        for (key, value) in form_urlencoded::parse(encoded) {
            self.0
                .entry(key.into_owned())
                .or_insert_with(|| value.into_owned());
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A present, non-empty value.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|value| !value.is_empty())
    }

    /// `true` for InfluxDB's truthy spellings.
    pub fn flag(&self, name: &str) -> bool {
        matches!(
            self.get(name),
            Some("true" | "1" | "t" | "T" | "TRUE" | "True")
        )
    }
}
