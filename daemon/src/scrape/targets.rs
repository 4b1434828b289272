//! Target discovery: static lists and Prometheus `file_sd` files, labelled and relabelled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_plugin_api::labels::SERVICE_NAME;
use kiln_plugin_api::Labels;
use serde::Deserialize;

use super::config::{FileSdConfig, ScrapeConfig};

/// One target of one job: where it is and the labels its profiles get.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub job: String,
    /// `scheme://host:port`, without a path.
    pub base_url: String,
    pub labels: Labels,
}

/// Why a target address is refused.
#[derive(Debug, thiserror::Error)]
#[error("target {0:?} is not host:port (no scheme, path or spaces)")]
pub struct BadAddress(pub String);

pub fn check_address(address: &str) -> Result<(), BadAddress> {
    let bad = || BadAddress(address.to_string());
    if address.contains("://") || address.contains('/') || address.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// One group of a `file_sd` file.
#[derive(Debug, Deserialize)]
struct FileGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A target address and the labels its group gives it.
type Group = (String, BTreeMap<String, String>);

/// A file's modification time when read, and its groups or why it could not be used.
type CachedFile = (Option<SystemTime>, Result<Vec<Group>, String>);

/// The `file_sd` files already read, by path and modification time, so unchanged files are
/// not parsed again.
#[derive(Default)]
pub struct FileCache {
    files: BTreeMap<PathBuf, CachedFile>,
}

impl FileCache {
    /// The groups of every file `sd` names (patterns expanded). A file that cannot be read or
    /// parsed contributes nothing and its error is returned beside the groups.
    fn groups(&mut self, sd: &FileSdConfig) -> (Vec<Group>, Vec<String>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for pattern in &sd.files {
            for path in expand(pattern) {
                let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                let fresh = match self.files.get(&path) {
                    Some((t, _)) => *t != mtime || mtime.is_none(),
                    None => true,
                };
                if fresh {
                    self.files.insert(path.clone(), (mtime, read_file(&path)));
                }
                match &self.files[&path].1 {
                    Ok(g) => out.extend(g.iter().cloned()),
                    Err(e) => errors.push(e.clone()),
                }
            }
        }
        (out, errors)
    }
}

fn read_file(path: &Path) -> Result<Vec<Group>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let groups: Vec<FileGroup> = if matches!(ext, "yml" | "yaml") {
        serde_yaml_ng::from_str(&text).map_err(|e| {
            format!(
                "{}: not a file_sd YAML list of {{targets, labels}}: {e}",
                path.display()
            )
        })?
    } else {
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a file_sd JSON list of {{targets, labels}}: {e}",
                path.display()
            )
        })?
    };
    let mut out = Vec::new();
    for g in groups {
        for t in g.targets {
            check_address(&t).map_err(|e| format!("{}: {e}", path.display()))?;
            out.push((t, g.labels.clone()));
        }
    }
    Ok(out)
}

/// A path, or the files matching its last element when that has `*` in it.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let Some(name) = pattern.file_name().and_then(|n| n.to_str()) else {
        return vec![pattern.to_path_buf()];
    };
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(name, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Every target of `job` now: static ones, then those of its `file_sd` files. Also returns
/// the errors of files that could not be read.
pub fn discover(job: &ScrapeConfig, cache: &mut FileCache) -> (Vec<Target>, Vec<String>) {
    let mut found: Vec<Group> = Vec::new();
    for s in &job.static_configs {
        for t in &s.targets {
            found.push((t.clone(), s.labels.clone()));
        }
    }
    let mut errors = Vec::new();
    for sd in &job.file_sd_configs {
        let (groups, errs) = cache.groups(sd);
        found.extend(groups);
        errors.extend(errs);
    }
    let mut targets: Vec<Target> = found
        .into_iter()
        .map(|(address, labels)| target(job, &address, &labels))
        .collect();
    targets.sort();
    targets.dedup();
    (targets, errors)
}

fn target(job: &ScrapeConfig, address: &str, extra: &BTreeMap<String, String>) -> Target {
    let mut labels = Labels::new();
    labels.insert("job", job.job_name.clone());
    labels.insert("instance", address);
    for (k, v) in extra {
        labels.insert(k.clone(), v.clone());
    }
    if labels.service_name().is_none_or(str::is_empty) {
        labels.insert(SERVICE_NAME, job.job_name.clone());
    }
    for r in &job.relabel_configs {
        r.apply(&mut labels);
    }
    // `__`-prefixed labels are Prometheus' meta labels: never stored.
    labels.retain(|k, _| !k.starts_with("__"));
    Target {
        job: job.job_name.clone(),
        base_url: format!("{}://{address}", job.scheme),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.json", "a.json"));
        assert!(wildcard("t-*-x.json", "t-1-x.json"));
        assert!(!wildcard("*.json", "a.yaml"));
        assert!(!wildcard("a*a", "a"));
    }

    #[test]
    fn file_sd_files_in_json_and_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("a.json");
        std::fs::write(
            &json,
            r#"[{"targets": ["h:1", "h:2"], "labels": {"env": "prod"}}]"#,
        )
        .unwrap();
        let yaml = dir.path().join("b.yaml");
        std::fs::write(
            &yaml,
            "- targets: ['h:3']\n  labels:\n    env: dev\n- targets: [h:4]\n",
        )
        .unwrap();
        let from_json = read_file(&json).unwrap();
        assert_eq!(from_json.len(), 2);
        assert_eq!(from_json[1].0, "h:2");
        assert_eq!(from_json[1].1.get("env").map(String::as_str), Some("prod"));
        let from_yaml = read_file(&yaml).unwrap();
        assert_eq!(from_yaml.len(), 2);
        assert_eq!(from_yaml[0].0, "h:3");
        assert_eq!(from_yaml[0].1.get("env").map(String::as_str), Some("dev"));
        assert!(from_yaml[1].1.is_empty());

        std::fs::write(&yaml, "targets: [h:1]\n").unwrap();
        let e = read_file(&yaml).unwrap_err();
        assert!(e.contains("b.yaml") && e.contains("YAML"), "{e}");
        std::fs::write(&yaml, "- targets: ['http://h:1']\n").unwrap();
        assert!(read_file(&yaml).is_err());
    }

    #[test]
    fn addresses() {
        assert!(check_address("127.0.0.1:6060").is_ok());
        assert!(check_address("[::1]:6060").is_ok());
        assert!(check_address("http://x:1").is_err());
        assert!(check_address("x").is_err());
        assert!(check_address("x:port").is_err());
    }

    #[test]
    fn labels_of_a_target() {
        let job: ScrapeConfig = toml::from_str(
            r#"
            job_name = "api"
            relabel_configs = [{ rename = { team = "owner" } }]
            [[static_configs]]
            targets = ["h:1"]
            labels = { env = "prod", team = "a", __meta_x = "y" }
            "#,
        )
        .unwrap();
        let (targets, errors) = discover(&job, &mut FileCache::default());
        assert!(errors.is_empty());
        let t = &targets[0];
        assert_eq!(t.base_url, "http://h:1");
        assert_eq!(t.labels.get("service_name"), Some("api"));
        assert_eq!(t.labels.get("job"), Some("api"));
        assert_eq!(t.labels.get("instance"), Some("h:1"));
        assert_eq!(t.labels.get("env"), Some("prod"));
        assert_eq!(t.labels.get("owner"), Some("a"));
        assert_eq!(t.labels.get("team"), None);
        assert_eq!(t.labels.get("__meta_x"), None);
    }
}
