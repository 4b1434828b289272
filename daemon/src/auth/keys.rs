//! API keys: random secrets handed out once, kept only as keyed hashes.
//!
//! The store is two files in `<storage.path>/auth/`:
//! * `hash.key`: 32 random bytes, the key of the keyed hash (blake3). Without it the stored
//!   hashes are useless to whoever copies `apikeys.json`.
//! * `apikeys.json`: the key records, rewritten whole through a temporary file and a rename,
//!   so a reader sees the old list or the new one, never half of one.
//!
//! Files rather than a sled tree: sled locks its database for one process, and keys must be
//! manageable by `kiln admin apikey` on the data directory whatever the daemon is doing. A
//! running daemon notices a rewritten file (by its size, mtime and inode) and reloads it, so
//! keys created or revoked offline take effect without a restart. Writers take an exclusive
//! lock on `apikeys.lock` around read-modify-write.
//!
//! Keys are 32 random bytes, so a fast keyed hash is enough (no password stretching); hashes
//! are compared in constant time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use kiln_plugin_api::Tenant;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// What every key starts with, so leaked keys can be recognised (secret scanners) and a
/// credential meant for something else is told apart.
pub const KEY_PREFIX: &str = "kiln_";

/// What a key may do. Each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, exports, `/metrics`.
    Reader,
    /// Pushes, and what a reader may do.
    Writer,
    /// Everything: deletes, reloads, the admin API.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored key: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `None`: an admin key for every tenant (it picks one with `X-Scope-OrgID`).
    pub tenant: Option<Tenant>,
    /// blake3 keyed hash of the key, hex.
    pub hash: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    /// `active`, `revoked` or `expired`, as of `now` (Unix seconds).
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    /// The record as listed: no hash.
    pub fn info(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "tenant": self.tenant,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": self.status(now),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a Kiln key store: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("no API key with id {0:?} (see `kiln admin apikey list`)")]
    NoSuchKey(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

/// What a presented key turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(KeyRecord),
    /// Not a key of this store (or not a Kiln key at all).
    Unknown,
    Revoked(KeyRecord),
    Expired(KeyRecord),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// Identity of the file's current version: a rewrite changes at least the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

struct Loaded {
    keys: Vec<KeyRecord>,
    secret: Option<[u8; 32]>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// How often a running daemon looks at the file: at most once per second while keys match,
/// and on a key it does not know at most every 50 ms (a key just created offline).
const RECHECK: Duration = Duration::from_secs(1);
const RECHECK_ON_MISS: Duration = Duration::from_millis(50);

pub struct KeyStore {
    dir: PathBuf,
    state: RwLock<Loaded>,
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], KeyStoreError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyStoreError::Random(e.to_string()))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl KeyStore {
    /// The store of the data directory `data_dir`. Nothing is created until a key is.
    pub fn open(data_dir: &Path) -> Result<Self, KeyStoreError> {
        let store = Self {
            dir: data_dir.join("auth"),
            state: RwLock::new(Loaded {
                keys: Vec::new(),
                secret: None,
                stamp: None,
                checked: Instant::now(),
            }),
        };
        store.reload()?;
        Ok(store)
    }

    fn keys_path(&self) -> PathBuf {
        self.dir.join("apikeys.json")
    }

    fn secret_path(&self) -> PathBuf {
        self.dir.join("hash.key")
    }

    fn stamp(&self) -> Result<Option<Stamp>, KeyStoreError> {
        let path = self.keys_path();
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(Stamp {
                len: m.len(),
                modified: m.modified().ok(),
                inode: {
                    #[cfg(unix)]
                    {
                        std::os::unix::fs::MetadataExt::ino(&m)
                    }
                    #[cfg(not(unix))]
                    {
                        0
                    }
                },
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn read_secret(&self) -> Result<Option<[u8; 32]>, KeyStoreError> {
        let path = self.secret_path();
        match std::fs::read(&path) {
            Ok(b) => b
                .try_into()
                .map(Some)
                .map_err(|b: Vec<u8>| KeyStoreError::Corrupt {
                    path,
                    reason: format!("{} bytes, expected 32", b.len()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn read_keys(&self) -> Result<Vec<KeyRecord>, KeyStoreError> {
        let path = self.keys_path();
        match std::fs::read(&path) {
            Ok(b) => {
                let file: KeyFile =
                    serde_json::from_slice(&b).map_err(|e| KeyStoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(file.keys)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Reads the files again.
    fn reload(&self) -> Result<(), KeyStoreError> {
        let stamp = self.stamp()?;
        let keys = self.read_keys()?;
        let secret = self.read_secret()?;
        let mut st = self.state.write();
        st.keys = keys;
        st.secret = secret;
        st.stamp = stamp;
        st.checked = Instant::now();
        Ok(())
    }

    /// Reloads when the file changed, looking at most every `every`.
    fn refresh(&self, every: Duration) {
        if self.state.read().checked.elapsed() < every {
            return;
        }
        let changed = match self.stamp() {
            Ok(stamp) => stamp != self.state.read().stamp,
            Err(_) => true,
        };
        if changed {
            if let Err(e) = self.reload() {
                // Keep serving the keys loaded before; the next look tries again.
                tracing::error!(error = %e, "reading the API key store failed; keeping the keys loaded before");
            }
        }
        self.state.write().checked = Instant::now();
    }

    fn find(&self, presented: &str, now: i64) -> Verdict {
        let st = self.state.read();
        let Some(secret) = st.secret else {
            return Verdict::Unknown;
        };
        if !presented.starts_with(KEY_PREFIX) {
            return Verdict::Unknown;
        }
        let hash = blake3::keyed_hash(&secret, presented.as_bytes());
        let mut found = None;
        // Every record is compared, in constant time, whatever matched before.
        for (i, k) in st.keys.iter().enumerate() {
            let stored = unhex(&k.hash).unwrap_or([0; 32]);
            if bool::from(stored.ct_eq(hash.as_bytes())) {
                found = Some(i);
            }
        }
        match found.map(|i| st.keys[i].clone()) {
            None => Verdict::Unknown,
            Some(k) if k.revoked_at.is_some() => Verdict::Revoked(k),
            Some(k) if k.expires_at.is_some_and(|e| e <= now) => Verdict::Expired(k),
            Some(k) => Verdict::Valid(k),
        }
    }

    /// Checks a presented key, picking up keys created or revoked since the last look.
    pub fn verify(&self, presented: &str) -> Verdict {
        self.refresh(RECHECK);
        let now = now_s();
        match self.find(presented, now) {
            Verdict::Unknown => {
                self.refresh(RECHECK_ON_MISS);
                self.find(presented, now)
            }
            v => v,
        }
    }

    /// Every key, newest last, re-read from disk.
    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyStoreError> {
        self.reload()?;
        Ok(self.state.read().keys.clone())
    }

    /// Creates a key; returns the key (shown once, never stored) and its record.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        tenant: Option<Tenant>,
        expires_at: Option<i64>,
    ) -> Result<(String, KeyRecord), KeyStoreError> {
        if name.trim().is_empty() {
            return Err(KeyStoreError::Invalid("a key needs a --name".into()));
        }
        if tenant.is_none() && role != Role::Admin {
            return Err(KeyStoreError::Invalid(
                "only admin keys may be for every tenant".into(),
            ));
        }
        self.locked(|keys, secret| {
            let key = format!(
                "{KEY_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?)
            );
            let record = KeyRecord {
                id: hex(&random::<6>()?),
                name: name.trim().to_string(),
                role,
                tenant,
                hash: blake3::keyed_hash(secret, key.as_bytes())
                    .to_hex()
                    .to_string(),
                created_at: now_s(),
                expires_at,
                revoked_at: None,
            };
            keys.push(record.clone());
            Ok((key, record))
        })
    }

    /// Revokes key `id` (the record stays, so a later use is refused as revoked).
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, KeyStoreError> {
        self.locked(|keys, _| {
            let k = keys
                .iter_mut()
                .find(|k| k.id == id)
                .ok_or_else(|| KeyStoreError::NoSuchKey(id.to_string()))?;
            if k.revoked_at.is_none() {
                k.revoked_at = Some(now_s());
            }
            Ok(k.clone())
        })
    }

    /// Read-modify-write of the key file under an exclusive lock; creates the directory and
    /// the hash key on first use.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut Vec<KeyRecord>, &[u8; 32]) -> Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        create_private_dir(&self.dir)?;
        let lock_path = self.dir.join("apikeys.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let secret = match self.read_secret()? {
            Some(s) => s,
            None => {
                let s = random::<32>()?;
                write_atomically(&self.secret_path(), &s)?;
                s
            }
        };
        let mut keys = self.read_keys()?;
        let out = f(&mut keys, &secret)?;
        let json =
            serde_json::to_vec_pretty(&KeyFile { version: 1, keys }).expect("keys serialize");
        write_atomically(&self.keys_path(), &json)?;
        drop(lock);
        self.reload()?;
        Ok(out)
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io(dir))
}

/// Writes `path` through a temporary file (mode 0600), fsync and rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Parses `--expires`: a duration from now (`90d`, `12h`) as Unix seconds.
pub fn expiry(raw: &str) -> Result<i64, KeyStoreError> {
    let d = humantime::parse_duration(raw).map_err(|e| {
        KeyStoreError::Invalid(format!("--expires {raw:?}: {e} (use e.g. 90d or 12h)"))
    })?;
    if d.is_zero() {
        return Err(KeyStoreError::Invalid(
            "--expires must be in the future".into(),
        ));
    }
    Ok(now_s().saturating_add(d.as_secs().min(i64::MAX as u64) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_by_hash_and_are_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert_eq!(store.verify("kiln_nothing"), Verdict::Unknown);
        let t = Tenant::new("t1").unwrap();
        let (key, rec) = store
            .create("ci", Role::Writer, Some(t.clone()), None)
            .unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43);
        let on_disk = std::fs::read_to_string(dir.path().join("auth/apikeys.json")).unwrap();
        assert!(!on_disk.contains(&key[KEY_PREFIX.len()..]), "{on_disk}");
        assert_eq!(store.verify(&key), Verdict::Valid(rec.clone()));
        assert_eq!(store.verify(&format!("{key}x")), Verdict::Unknown);
        assert_eq!(store.verify(&key[KEY_PREFIX.len()..]), Verdict::Unknown);

        // Another handle on the same directory (the CLI) revokes it: seen without a restart.
        let other = KeyStore::open(dir.path()).unwrap();
        other.revoke(&rec.id).unwrap();
        store.state.write().checked = Instant::now() - RECHECK;
        assert!(matches!(store.verify(&key), Verdict::Revoked(_)));
        assert!(matches!(
            other.revoke("nope"),
            Err(KeyStoreError::NoSuchKey(_))
        ));

        let (expired, _) = other
            .create("old", Role::Reader, Some(t), Some(now_s() - 1))
            .unwrap();
        std::thread::sleep(RECHECK_ON_MISS);
        assert!(matches!(store.verify(&expired), Verdict::Expired(_)));
        assert!(store.create("x", Role::Reader, None, None).is_err());
        assert!(store.create(" ", Role::Admin, None, None).is_err());
    }

    #[test]
    fn expiry_parses_durations() {
        let now = now_s();
        let e = expiry("90d").unwrap();
        assert!((e - now - 90 * 86_400).abs() <= 1);
        assert!(expiry("soon").is_err());
        assert!(expiry("0s").is_err());
    }
}
