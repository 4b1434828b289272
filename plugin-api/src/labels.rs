//! Series label sets and the Pyroscope `name=app.cpu{k=v,…}` syntax.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The label naming the application a series belongs to.
pub const SERVICE_NAME: &str = "service_name";
/// The label holding a series' profile type id (`process_cpu:samples:count:cpu:nanoseconds`).
pub const PROFILE_TYPE: &str = "__profile_type__";
/// The OG-style application name with its profile-type suffix (`myapp.cpu`).
pub const NAME: &str = "__name__";

/// A sorted set of `name=value` pairs identifying a series. Names are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds a label set from pairs; a later duplicate name replaces an earlier one.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels = Self::new();
        for (k, v) in pairs {
            labels.insert(k, v);
        }
        labels
    }

    /// Sets `name` to `value`, replacing any previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) => Some(self.0.remove(i).1),
            Err(_) => None,
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }

    /// The application (`service_name`) of the series, if set.
    pub fn service_name(&self) -> Option<&str> {
        self.get(SERVICE_NAME)
    }
}

impl fmt::Display for Labels {
    /// `{a="1",b="2"}`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// Why a Pyroscope `name` parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameParseError {
    #[error("the application name is empty")]
    EmptyApp,
    #[error("the application name {0:?} has a character outside [A-Za-z0-9_./-]")]
    BadApp(String),
    #[error("label {0:?} has no '=' between its name and value")]
    MissingEquals(String),
    #[error("label name {0:?} is empty or has a character outside [A-Za-z0-9_.]")]
    BadLabelName(String),
}

/// A parsed Pyroscope ingest name: `my.app.cpu{env=prod,region=eu}`.
///
/// The grammar is Pyroscope's: values are unquoted, cannot contain `,` or `}`, and are trimmed;
/// anything after the closing `}` is ignored; a later duplicate key wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyroscopeName {
    /// Everything before `{`, including any profile-type suffix (`my.app.cpu`).
    pub app: String,
    pub labels: Labels,
}

impl PyroscopeName {
    pub fn parse(input: &str) -> Result<Self, NameParseError> {
        let (app, rest) = match input.find('{') {
            Some(i) => (&input[..i], Some(&input[i + 1..])),
            None => (input, None),
        };
        let app = app.trim();
        if app.is_empty() {
            return Err(NameParseError::EmptyApp);
        }
        if !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        {
            return Err(NameParseError::BadApp(app.to_string()));
        }
        let mut labels = Labels::new();
        if let Some(rest) = rest {
            let body = match rest.find('}') {
                Some(i) => &rest[..i],
                None => rest,
            };
            for pair in body.split(',') {
                if pair.trim().is_empty() {
                    continue;
                }
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| NameParseError::MissingEquals(pair.trim().to_string()))?;
                let k = k.trim();
                if k != NAME
                    && (k.is_empty()
                        || !k
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                {
                    return Err(NameParseError::BadLabelName(k.to_string()));
                }
                labels.insert(k, v.trim());
            }
        }
        Ok(Self {
            app: app.to_string(),
            labels,
        })
    }

    /// Splits `app` at its last dot when the suffix names a known profile type:
    /// `my.app.cpu` → (`my.app`, `Some("cpu")`); `my.app` → (`my.app`, `None`).
    pub fn split_profile_type(&self) -> (&str, Option<&'static str>) {
        if let Some((base, suffix)) = self.app.rsplit_once('.') {
            if let Some(known) = crate::model::ProfileType::known_short_name(suffix) {
                return (base, Some(known));
            }
        }
        (&self.app, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_sorted_and_unique() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.to_string(), r#"{a="1",b="3"}"#);
    }

    #[test]
    fn parses_pyroscope_names() {
        let n =
            PyroscopeName::parse("my.app.cpu{env = staging,region=us-west-1, otel.scope.name=x}")
                .unwrap();
        assert_eq!(n.app, "my.app.cpu");
        assert_eq!(n.labels.get("env"), Some("staging"));
        assert_eq!(n.labels.get("otel.scope.name"), Some("x"));
        assert_eq!(n.split_profile_type(), ("my.app", Some("cpu")));
        let n = PyroscopeName::parse("svc").unwrap();
        assert!(n.labels.is_empty());
        assert_eq!(n.split_profile_type(), ("svc", None));
        assert_eq!(PyroscopeName::parse("a{}").unwrap().app, "a");
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(
            PyroscopeName::parse(" {a=b}"),
            Err(NameParseError::EmptyApp)
        );
        assert!(matches!(
            PyroscopeName::parse("a b"),
            Err(NameParseError::BadApp(_))
        ));
        assert!(matches!(
            PyroscopeName::parse("a{k}"),
            Err(NameParseError::MissingEquals(_))
        ));
        assert!(matches!(
            PyroscopeName::parse("a{k-x=1}"),
            Err(NameParseError::BadLabelName(_))
        ));
    }
}
