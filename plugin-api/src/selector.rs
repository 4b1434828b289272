//! Label selectors: `app.cpu{env="prod",region=~"eu-.*"}`, as Pyroscope's FlameQL and Grafana
//! Pyroscope's Prometheus-style queries write them.

use std::fmt;

use regex::Regex;

use crate::labels::{Labels, PyroscopeName, SERVICE_NAME};
use crate::model::ProfileType;

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    NotEq,
    Re,
    NotRe,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eq => "=",
            Self::NotEq => "!=",
            Self::Re => "=~",
            Self::NotRe => "!~",
        })
    }
}

/// One `name op "value"` condition on a series' labels. A label that is absent reads as `""`.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// Anchored regex for `=~` and `!~`.
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, SelectorParseError> {
        let value = value.into();
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| SelectorParseError::BadRegex(value.clone(), e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(name, MatchOp::Eq, value).expect("equality matchers always build")
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let actual = labels.get(&self.name).unwrap_or("");
        match self.op {
            MatchOp::Eq => actual == self.value,
            MatchOp::NotEq => actual != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(actual)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(actual)),
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

/// Which profile type a selector asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSelector {
    /// A short name: `cpu`, `inuse_space`.
    Name(String),
    /// A full id: `process_cpu:cpu:nanoseconds:cpu:nanoseconds`.
    Id(String),
}

impl TypeSelector {
    pub fn matches(&self, t: &ProfileType) -> bool {
        match self {
            Self::Name(n) => &t.name == n,
            Self::Id(id) => &t.id() == id,
        }
    }
}

/// A parsed selector: an optional profile type and label matchers, all of which must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    pub profile_type: Option<TypeSelector>,
    pub matchers: Vec<Matcher>,
}

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorParseError {
    #[error("selector is empty")]
    Empty,
    #[error("selector {0:?}: the name before '{{' is not a valid application name")]
    BadName(String),
    #[error("selector {0:?}: missing closing '}}'")]
    Unclosed(String),
    #[error("selector {input:?}: expected {expected} at byte {at}")]
    Expected {
        input: String,
        expected: &'static str,
        at: usize,
    },
    #[error("regex {0:?} does not compile: {1}")]
    BadRegex(String, String),
}

impl Selector {
    /// Parses `app.cpu{k="v"}`, `process_cpu:samples:count:cpu:nanoseconds{service_name="app"}`,
    /// `{service_name="app"}` or a bare `app.cpu`. Values may be double-quoted (with `\"` and
    /// `\\` escapes) or bare.
    pub fn parse(input: &str) -> Result<Self, SelectorParseError> {
        let input_trimmed = input.trim();
        if input_trimmed.is_empty() {
            return Err(SelectorParseError::Empty);
        }
        let (head, body) = match input_trimmed.find('{') {
            Some(i) => {
                let rest = &input_trimmed[i + 1..];
                let close = rest
                    .rfind('}')
                    .ok_or_else(|| SelectorParseError::Unclosed(input.to_string()))?;
                (input_trimmed[..i].trim(), Some(&rest[..close]))
            }
            None => (input_trimmed, None),
        };
        let mut selector = Selector::default();
        if !head.is_empty() {
            if head.contains(':') {
                selector.profile_type = Some(TypeSelector::Id(head.to_string()));
            } else {
                let name = PyroscopeName::parse(head)
                    .map_err(|_| SelectorParseError::BadName(input.to_string()))?;
                let (app, ty) = name.split_profile_type();
                selector.matchers.push(Matcher::eq(SERVICE_NAME, app));
                selector.profile_type = ty.map(|t| TypeSelector::Name(t.to_string()));
            }
        }
        if let Some(body) = body {
            parse_matchers(input, body, &mut selector.matchers)?;
        }
        Ok(selector)
    }

    /// A selector for every series of one application.
    pub fn for_service(app: &str) -> Self {
        Self {
            profile_type: None,
            matchers: vec![Matcher::eq(SERVICE_NAME, app)],
        }
    }

    pub fn matches(&self, labels: &Labels, profile_type: &ProfileType) -> bool {
        self.profile_type
            .as_ref()
            .is_none_or(|t| t.matches(profile_type))
            && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// The `service_name` an equality matcher pins, if any.
    pub fn service_name(&self) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == SERVICE_NAME && m.op == MatchOp::Eq)
            .map(|m| m.value.as_str())
    }
}

fn parse_matchers(
    input: &str,
    body: &str,
    out: &mut Vec<Matcher>,
) -> Result<(), SelectorParseError> {
    let bytes = body.as_bytes();
    let mut i = 0;
    let expected = |what: &'static str, at: usize| SelectorParseError::Expected {
        input: input.to_string(),
        expected: what,
        at,
    };
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            return Ok(());
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
        {
            i += 1;
        }
        if start == i {
            return Err(expected("a label name", start));
        }
        let name = &body[start..i];
        skip_ws(&mut i);
        let op = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'='), Some(b'~')) => (MatchOp::Re, 2),
            (Some(b'!'), Some(b'~')) => (MatchOp::NotRe, 2),
            (Some(b'!'), Some(b'=')) => (MatchOp::NotEq, 2),
            (Some(b'='), _) => (MatchOp::Eq, 1),
            _ => return Err(expected("one of = != =~ !~", i)),
        };
        i += op.1;
        skip_ws(&mut i);
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut value = String::new();
            loop {
                match body[i..].chars().next() {
                    None => return Err(expected("a closing '\"'", i)),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let next = body[i + 1..]
                            .chars()
                            .next()
                            .ok_or_else(|| expected("a character after '\\'", i))?;
                        value.push(next);
                        i += 1 + next.len_utf8();
                    }
                    Some(c) => {
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            value
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            body[start..i].trim().to_string()
        };
        out.push(Matcher::new(name, op.0, value)?);
        skip_ws(&mut i);
        match bytes.get(i) {
            None => return Ok(()),
            Some(b',') => i += 1,
            Some(_) => return Err(expected("',' or '}'", i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn parses_flameql() {
        let s = Selector::parse(r#"my.app.cpu{env="prod", region=~"eu-.*",host!="a",zone!~"x|y"}"#)
            .unwrap();
        assert_eq!(s.profile_type, Some(TypeSelector::Name("cpu".into())));
        assert_eq!(s.service_name(), Some("my.app"));
        assert_eq!(s.matchers.len(), 5);
        let cpu = ProfileType::well_known("cpu").unwrap();
        let l = labels(&[
            ("service_name", "my.app"),
            ("env", "prod"),
            ("region", "eu-west"),
            ("host", "b"),
        ]);
        assert!(s.matches(&l, &cpu));
        let l = labels(&[
            ("service_name", "my.app"),
            ("env", "prod"),
            ("region", "us-west"),
        ]);
        assert!(!s.matches(&l, &cpu));
        assert!(!s.matches(
            &labels(&[
                ("service_name", "my.app"),
                ("env", "prod"),
                ("region", "eu-1")
            ]),
            &ProfileType::well_known("alloc_space").unwrap()
        ));
    }

    #[test]
    fn parses_type_ids_and_bare_forms() {
        let s = Selector::parse(r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="a"}"#)
            .unwrap();
        assert_eq!(
            s.profile_type,
            Some(TypeSelector::Id(
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds".into()
            ))
        );
        assert_eq!(s.service_name(), Some("a"));
        let s = Selector::parse("{service_name=a,k=\"q\\\"uote\"}").unwrap();
        assert_eq!(s.matchers[1].value, "q\"uote");
        let s = Selector::parse("app").unwrap();
        assert_eq!(s.profile_type, None);
        assert_eq!(s.service_name(), Some("app"));
    }

    #[test]
    fn rejects_bad_selectors() {
        assert_eq!(Selector::parse(" "), Err(SelectorParseError::Empty));
        assert!(matches!(
            Selector::parse("a{b=\"c\""),
            Err(SelectorParseError::Unclosed(_))
        ));
        assert!(matches!(
            Selector::parse("a{=1}"),
            Err(SelectorParseError::Expected { .. })
        ));
        assert!(matches!(
            Selector::parse("a{b<1}"),
            Err(SelectorParseError::Expected { .. })
        ));
        assert!(matches!(
            Selector::parse("a{b=~\"(\"}"),
            Err(SelectorParseError::BadRegex(..))
        ));
        assert!(matches!(
            Selector::parse("a b{}"),
            Err(SelectorParseError::BadName(_))
        ));
    }
}
