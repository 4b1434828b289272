//! Tenants: who a series belongs to. A tenant is part of every series' identity beside its
//! labels, never a label a query could drop, so storage takes it on every read and write.

use serde::{Deserialize, Serialize};

/// The tenant of data pushed without one (auth off and no `X-Scope-OrgID`), as in Grafana
/// Pyroscope. Storage keeps its data in the layout it had before tenants existed.
pub const DEFAULT_TENANT: &str = "anonymous";

/// Longest tenant id accepted (Grafana Pyroscope's and Cortex's bound).
pub const MAX_TENANT_LEN: usize = 150;

/// A validated tenant id: 1 to 150 characters of `A-Z a-z 0-9 ! - _ . * ' ( )`, not `.` or
/// `..` — the set Grafana Pyroscope accepts in `X-Scope-OrgID`. Because it never holds a NUL,
/// `/` or whitespace, storage can use it as a key prefix with a NUL separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_TENANT_LEN} characters")]
    TooLong,
    #[error("tenant id {0:?} is not allowed")]
    Reserved(String),
    #[error("tenant id has the character {0:?}; use letters, digits and ! - _ . * ' ( )")]
    BadChar(char),
}

impl Tenant {
    /// Checks `id` and makes it a tenant.
    pub fn new(id: impl Into<String>) -> Result<Self, TenantError> {
        let id = id.into();
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if id.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong);
        }
        if id == "." || id == ".." {
            return Err(TenantError::Reserved(id));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
        {
            return Err(TenantError::BadChar(c));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is [`DEFAULT_TENANT`].
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_TENANT
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self(DEFAULT_TENANT.to_string())
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Tenant {
    type Err = TenantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Tenant {
    type Error = TenantError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> Self {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_grafana_tenant_ids_and_refuses_the_rest() {
        for ok in ["anonymous", "team-a", "A_b.c", "x!*'()", &"a".repeat(150)] {
            assert_eq!(Tenant::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(Tenant::new(""), Err(TenantError::Empty));
        assert_eq!(Tenant::new("a".repeat(151)), Err(TenantError::TooLong));
        assert!(matches!(Tenant::new(".."), Err(TenantError::Reserved(_))));
        for bad in ["a/b", "a b", "a\0b", "é", "a|b", "a,b"] {
            assert!(Tenant::new(bad).is_err(), "{bad:?}");
        }
        assert!(Tenant::default().is_default());
        let t: Tenant = serde_json::from_str("\"t1\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"t1\"");
        assert!(serde_json::from_str::<Tenant>("\"a/b\"").is_err());
    }
}
