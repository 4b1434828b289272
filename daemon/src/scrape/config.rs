//! `[[scrape_configs]]` and `[scrape]`: what the daemon pulls, from where, how often.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::profiles::ProfileKind;
use crate::relabel::RelabelConfig;

/// `[scrape]`: settings shared by every scrape job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeSettings {
    /// Scrapes (HTTP requests) in flight at once over all targets. A CPU profile holds its
    /// slot for the whole profiling window, so this should exceed the number of targets.
    pub max_concurrent: usize,
    /// Redirects followed per request.
    pub max_redirects: u32,
}

impl Default for ScrapeSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_redirects: 5,
        }
    }
}

/// One `[[scrape_configs]]` entry: a job and its targets.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub scrape_interval: Duration,
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub scrape_timeout: Duration,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Tenant the profiles are stored under; the default tenant when unset.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Profiles pulled from every target (names of [`ProfileKind`] or of `profile_paths`).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    /// Path per profile name: overrides a built-in path or defines a custom profile.
    #[serde(default)]
    pub profile_paths: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_config: ScrapeTls,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Applied in order to each target's labels (`job`, `instance` and the target's own).
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Files or `*` patterns in their last path element (`targets/*.json`).
    pub files: Vec<PathBuf>,
    #[serde(with = "humantime_serde", default = "default_refresh")]
    pub refresh_interval: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_scheme() -> String {
    "http".into()
}
fn default_profiles() -> Vec<String> {
    ["cpu", "heap", "goroutine", "mutex", "block"]
        .map(String::from)
        .to_vec()
}

impl ScrapeSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_concurrent == 0 {
            bail!("in [scrape], key `max_concurrent`: must be at least 1");
        }
        Ok(())
    }
}

impl ScrapeConfig {
    /// Checks one job; errors name the table (`scrape_configs[i]`) and the key.
    pub fn validate(&self, index: usize) -> anyhow::Result<()> {
        let at = format!(
            "[[scrape_configs]] #{} (job_name {:?})",
            index + 1,
            self.job_name
        );
        if self.job_name.trim().is_empty() {
            bail!("in {at}, key `job_name`: must not be empty");
        }
        if self.scrape_interval < Duration::from_secs(1) {
            bail!("in {at}, key `scrape_interval`: must be at least 1s");
        }
        if self.scrape_timeout.is_zero() {
            bail!("in {at}, key `scrape_timeout`: must be greater than zero");
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            bail!(
                "in {at}, key `scheme`: {:?}: use http or https",
                self.scheme
            );
        }
        if let Some(t) = &self.tenant {
            kiln_plugin_api::Tenant::new(t.clone())
                .map_err(|e| anyhow::anyhow!("in {at}, key `tenant`: {e}"))?;
        }
        if self.profiles.is_empty() {
            bail!("in {at}, key `profiles`: must name at least one profile");
        }
        for p in &self.profiles {
            if ProfileKind::named(p).is_none() && !self.profile_paths.contains_key(p) {
                bail!(
                    "in {at}, key `profiles`: unknown profile {p:?}; use one of {} or give its path in [scrape_configs.profile_paths]",
                    ProfileKind::NAMES.join(", ")
                );
            }
        }
        for (name, path) in &self.profile_paths {
            if !path.starts_with('/') {
                bail!("in {at}.profile_paths, key `{name}`: {path:?} must start with /");
            }
        }
        if self.static_configs.is_empty() && self.file_sd_configs.is_empty() {
            bail!("in {at}: no targets; add [[scrape_configs.static_configs]] or [[scrape_configs.file_sd_configs]]");
        }
        for (i, s) in self.static_configs.iter().enumerate() {
            if s.targets.is_empty() {
                bail!(
                    "in {at}.static_configs #{}, key `targets`: must not be empty",
                    i + 1
                );
            }
            for t in &s.targets {
                super::targets::check_address(t).map_err(|e| {
                    anyhow::anyhow!("in {at}.static_configs #{}, key `targets`: {e}", i + 1)
                })?;
            }
        }
        for (i, f) in self.file_sd_configs.iter().enumerate() {
            if f.files.is_empty() {
                bail!(
                    "in {at}.file_sd_configs #{}, key `files`: must not be empty",
                    i + 1
                );
            }
            if f.refresh_interval < Duration::from_millis(100) {
                bail!(
                    "in {at}.file_sd_configs #{}, key `refresh_interval`: must be at least 100ms",
                    i + 1
                );
            }
        }
        if let Some(b) = &self.basic_auth {
            if b.password.is_some() == b.password_file.is_some() {
                bail!("in {at}.basic_auth: set exactly one of `password` and `password_file`");
            }
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            bail!(
                "in {at}, key `bearer_token_file`: set bearer_token or bearer_token_file, not both"
            );
        }
        if self.basic_auth.is_some()
            && (self.bearer_token.is_some() || self.bearer_token_file.is_some())
        {
            bail!("in {at}, key `bearer_token`: basic_auth and a bearer token exclude each other");
        }
        if self.tls_config.cert_file.is_some() != self.tls_config.key_file.is_some() {
            bail!("in {at}.tls_config: cert_file and key_file go together");
        }
        Ok(())
    }
}
