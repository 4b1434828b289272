//! The profiles a target serves (Go's `net/http/pprof` and godeltaprof paths) and how each
//! is turned into a push body.

use std::time::Duration;

/// A built-in profile name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Cpu,
    Heap,
    Goroutine,
    Mutex,
    Block,
    DeltaHeap,
    DeltaMutex,
    DeltaBlock,
}

impl ProfileKind {
    pub const NAMES: &'static [&'static str] = &[
        "cpu",
        "heap",
        "goroutine",
        "mutex",
        "block",
        "delta_heap",
        "delta_mutex",
        "delta_block",
    ];

    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "cpu" => Self::Cpu,
            "heap" => Self::Heap,
            "goroutine" => Self::Goroutine,
            "mutex" => Self::Mutex,
            "block" => Self::Block,
            "delta_heap" => Self::DeltaHeap,
            "delta_mutex" => Self::DeltaMutex,
            "delta_block" => Self::DeltaBlock,
            _ => return None,
        })
    }

    /// The path Go's `net/http/pprof` (or godeltaprof) serves it at.
    pub fn default_path(self) -> &'static str {
        match self {
            Self::Cpu => "/debug/pprof/profile",
            Self::Heap => "/debug/pprof/heap",
            Self::Goroutine => "/debug/pprof/goroutine",
            Self::Mutex => "/debug/pprof/mutex",
            Self::Block => "/debug/pprof/block",
            Self::DeltaHeap => "/debug/pprof/delta_heap",
            Self::DeltaMutex => "/debug/pprof/delta_mutex",
            Self::DeltaBlock => "/debug/pprof/delta_block",
        }
    }

    /// Whether the target serves running totals since it started, which Kiln stores as the
    /// difference between consecutive scrapes.
    pub fn cumulative(self) -> bool {
        matches!(self, Self::Heap | Self::Mutex | Self::Block)
    }

    /// The `sample_type_config` the push path takes for this profile: names and which sample
    /// types are running totals (as Pyroscope's Go agent sends them). `None`: the decoder's
    /// defaults.
    pub fn sample_type_config(self) -> Option<&'static str> {
        match self {
            Self::Heap => Some(
                r#"{"alloc_objects":{"units":"objects","cumulative":true},"alloc_space":{"units":"bytes","cumulative":true},"inuse_objects":{"units":"objects","aggregation":"average"},"inuse_space":{"units":"bytes","aggregation":"average"}}"#,
            ),
            Self::DeltaHeap => Some(
                r#"{"alloc_objects":{"units":"objects"},"alloc_space":{"units":"bytes"},"inuse_objects":{"units":"objects","aggregation":"average"},"inuse_space":{"units":"bytes","aggregation":"average"}}"#,
            ),
            Self::Mutex => Some(
                r#"{"contentions":{"display-name":"mutex_count","units":"lock_samples","cumulative":true},"delay":{"display-name":"mutex_duration","units":"lock_nanoseconds","cumulative":true}}"#,
            ),
            Self::DeltaMutex => Some(
                r#"{"contentions":{"display-name":"mutex_count","units":"lock_samples"},"delay":{"display-name":"mutex_duration","units":"lock_nanoseconds"}}"#,
            ),
            Self::Block => Some(
                r#"{"contentions":{"display-name":"block_count","units":"lock_samples","cumulative":true},"delay":{"display-name":"block_duration","units":"lock_nanoseconds","cumulative":true}}"#,
            ),
            Self::DeltaBlock => Some(
                r#"{"contentions":{"display-name":"block_count","units":"lock_samples"},"delay":{"display-name":"block_duration","units":"lock_nanoseconds"}}"#,
            ),
            Self::Cpu | Self::Goroutine => None,
        }
    }
}

/// One profile of a job, resolved: its name, kind (`None` for a custom one) and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    pub name: String,
    pub kind: Option<ProfileKind>,
    pub path: String,
}

impl ProfileSpec {
    pub fn resolve(name: &str, paths: &std::collections::BTreeMap<String, String>) -> Self {
        let kind = ProfileKind::named(name);
        let path = paths
            .get(name)
            .cloned()
            .or_else(|| kind.map(|k| k.default_path().to_string()))
            .unwrap_or_default();
        Self {
            name: name.to_string(),
            kind,
            path,
        }
    }

    pub fn cumulative(&self) -> bool {
        self.kind.is_some_and(ProfileKind::cumulative)
    }
}

/// How long a CPU profile records: the scrape interval less a margin for the request and the
/// upload (1 s, or a fifth of intervals under 5 s), at least one second.
pub fn cpu_seconds(interval: Duration) -> u64 {
    let margin = if interval >= Duration::from_secs(5) {
        Duration::from_secs(1)
    } else {
        interval / 5
    };
    (interval.saturating_sub(margin)).as_secs().max(1)
}

const BOUNDARY: &str = "kiln-scrape-7d1c0f3a9b";

/// The `multipart/form-data` content type of [`multipart_body`].
pub fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A push body as Pyroscope's Go agent sends it: `profile`, optional `prev_profile` (the
/// previous scrape of a cumulative profile) and optional `sample_type_config`.
pub fn multipart_body(profile: &[u8], prev: Option<&[u8]>, config: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(profile.len() + prev.map_or(0, <[u8]>::len) + 1024);
    let mut part = |name: &str, data: &[u8]| {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    };
    part("profile", profile);
    if let Some(prev) = prev {
        part("prev_profile", prev);
    }
    if let Some(c) = config {
        part("sample_type_config", c.as_bytes());
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_api::multipart;

    #[test]
    fn cpu_window_leaves_a_margin() {
        assert_eq!(cpu_seconds(Duration::from_secs(15)), 14);
        assert_eq!(cpu_seconds(Duration::from_secs(60)), 59);
        assert_eq!(cpu_seconds(Duration::from_secs(2)), 1);
        assert_eq!(cpu_seconds(Duration::from_secs(1)), 1);
    }

    #[test]
    fn multipart_round_trips() {
        let body = multipart_body(b"abc", Some(b"prev"), Some("{}"));
        let b = multipart::boundary(&multipart_content_type())
            .unwrap()
            .unwrap();
        let parts = multipart::parse(&body, &b).unwrap();
        let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["profile", "prev_profile", "sample_type_config"]);
        assert_eq!(parts[0].data, b"abc");
        assert_eq!(parts[1].data, b"prev");
    }

    #[test]
    fn paths_default_and_override() {
        let mut paths = std::collections::BTreeMap::new();
        assert_eq!(
            ProfileSpec::resolve("heap", &paths).path,
            "/debug/pprof/heap"
        );
        paths.insert("heap".into(), "/x/heap".into());
        paths.insert("fgprof".into(), "/debug/fgprof".into());
        assert_eq!(ProfileSpec::resolve("heap", &paths).path, "/x/heap");
        let custom = ProfileSpec::resolve("fgprof", &paths);
        assert_eq!((custom.kind, custom.path.as_str()), (None, "/debug/fgprof"));
        assert!(ProfileSpec::resolve("mutex", &paths).cumulative());
        assert!(!ProfileSpec::resolve("delta_mutex", &paths).cumulative());
    }
}
