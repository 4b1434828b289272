//! The free-disk floor (`storage.min_free_disk_bytes`): below it, pushes are refused before
//! anything of them is logged or stored, so a full disk never costs an acknowledged push and
//! never leaves storage half-written. Pushes are taken again as soon as space is back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Free space of the filesystems Kiln writes to, against the floor.
pub struct DiskGuard {
    /// The data directory, and the write-ahead log's when it is elsewhere.
    paths: Vec<PathBuf>,
    floor: u64,
    /// The last measured free bytes (the smallest over `paths`); `u64::MAX` before the first.
    free: AtomicU64,
}

/// A push refused because the disk is below the floor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("only {free} bytes are free on the filesystem of {path}, below storage.min_free_disk_bytes = {floor}; pushes are refused until space is freed (delete data, lower storage.max_disk_bytes or grow the disk)")]
pub struct DiskFull {
    pub path: String,
    pub free: u64,
    pub floor: u64,
}

/// Bytes available to unprivileged writers on the filesystem of `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

impl DiskGuard {
    pub fn new(paths: Vec<PathBuf>, floor: u64) -> Self {
        Self {
            paths,
            floor,
            free: AtomicU64::new(u64::MAX),
        }
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Measures free space now (a `statvfs` per path: microseconds). A path that cannot be
    /// measured (not created yet) does not count.
    pub fn measure(&self) -> Option<(u64, &PathBuf)> {
        let least = self
            .paths
            .iter()
            .filter_map(|p| free_bytes(p).ok().map(|f| (f, p)))
            .min_by_key(|(f, _)| *f);
        if let Some((free, _)) = least {
            self.free.store(free, Ordering::Relaxed);
        }
        least
    }

    /// The last measured free bytes, if any path could be measured.
    pub fn last_free(&self) -> Option<u64> {
        Some(self.free.load(Ordering::Relaxed)).filter(|&f| f != u64::MAX)
    }

    /// Refuses when free space is below the floor.
    pub fn check(&self) -> Result<(), DiskFull> {
        if self.floor == 0 {
            return Ok(());
        }
        match self.measure() {
            Some((free, path)) if free < self.floor => Err(DiskFull {
                path: path.display().to_string(),
                free,
                floor: self.floor,
            }),
            _ => Ok(()),
        }
    }
}
