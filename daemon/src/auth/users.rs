//! Users: people who sign in to the UI with a name and a password.
//!
//! The store is `users.json` beside the key store in `<storage.path>/auth/`, written the same
//! way (whole, through a temporary file and a rename, under `users.lock`) and re-read by a
//! running daemon when it changes, so `kiln admin user …` on the data directory takes effect
//! without a restart. Passwords are kept as argon2id hashes (PHC strings).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use kiln_plugin_api::Tenant;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::keys::{self, now_s, KeyStoreError, Role};

/// What a person may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Reads only.
    Viewer,
    /// Pushes and deletes in its tenant.
    Editor,
    /// Users, keys, deletes; every tenant, or one.
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::Editor => "editor",
            UserRole::Admin => "admin",
        }
    }

    /// The role of the principal a session of this user resolves to.
    pub fn principal_role(self) -> Role {
        match self {
            UserRole::Viewer => Role::Reader,
            UserRole::Editor => Role::Writer,
            UserRole::Admin => Role::Admin,
        }
    }
}

impl std::fmt::Display for UserRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: UserRole,
    /// `None`: an admin of every tenant.
    pub tenant: Option<Tenant>,
    /// argon2id PHC string.
    pub hash: String,
    pub created_at: i64,
    /// Unix seconds; sessions opened before it are void (a reset ends them).
    pub password_set_at: i64,
}

impl UserRecord {
    /// The record as listed: no hash.
    pub fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "role": self.role,
            "tenant": self.tenant,
            "created_at": self.created_at,
            "password_set_at": self.password_set_at,
        })
    }

    pub fn tenant_name(&self) -> String {
        self.tenant
            .as_ref()
            .map_or_else(|| "*".to_string(), |t| t.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    #[error(transparent)]
    Store(#[from] KeyStoreError),
    #[error("no user {0:?} (see `kiln admin user list`)")]
    NoSuchUser(String),
    #[error("a user {0:?} exists already (use `kiln admin user reset-password`)")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserFile {
    version: u32,
    users: Vec<UserRecord>,
}

struct Loaded {
    users: Vec<UserRecord>,
    stamp: Option<(u64, Option<SystemTime>, u64)>,
    checked: Instant,
}

const RECHECK: Duration = Duration::from_secs(1);

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

pub struct UserStore {
    dir: PathBuf,
    state: RwLock<Loaded>,
    /// Verified against when the user does not exist, so both cases take as long.
    dummy_hash: String,
}

fn hash_password(password: &str) -> Result<String, UserStoreError> {
    let salt = SaltString::encode_b64(&keys::random::<16>()?)
        .map_err(|e| UserStoreError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserStoreError::Hash(e.to_string()))
}

fn check_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A user name: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), UserStoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(UserStoreError::Invalid(format!(
            "user name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

pub fn check_password_strength(password: &str) -> Result<(), UserStoreError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(UserStoreError::Invalid(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A random password for a new account: 20 characters of URL-safe base64.
pub fn random_password() -> Result<String, UserStoreError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(keys::random::<15>()?))
}

impl UserStore {
    pub fn open(data_dir: &Path) -> Result<Self, UserStoreError> {
        let store = Self {
            dir: data_dir.join("auth"),
            state: RwLock::new(Loaded {
                users: Vec::new(),
                stamp: None,
                checked: Instant::now(),
            }),
            dummy_hash: hash_password("not a password of anyone")?,
        };
        store.reload()?;
        Ok(store)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("users.json")
    }

    fn stamp(&self) -> Option<(u64, Option<SystemTime>, u64)> {
        let m = std::fs::metadata(self.path()).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some((m.len(), m.modified().ok(), inode))
    }

    fn read(&self) -> Result<Vec<UserRecord>, UserStoreError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<UserFile>(&b)
                .map(|f| f.users)
                .map_err(|e| {
                    KeyStoreError::Corrupt {
                        path,
                        reason: e.to_string(),
                    }
                    .into()
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(keys::io(&path)(e).into()),
        }
    }

    fn reload(&self) -> Result<(), UserStoreError> {
        let stamp = self.stamp();
        let users = self.read()?;
        let mut st = self.state.write();
        st.users = users;
        st.stamp = stamp;
        st.checked = Instant::now();
        Ok(())
    }

    /// Re-reads the file when it changed, looking at most once a second.
    fn refresh(&self) {
        if self.state.read().checked.elapsed() < RECHECK {
            return;
        }
        if self.stamp() != self.state.read().stamp {
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "reading the user store failed; keeping the users loaded before");
            }
        }
        self.state.write().checked = Instant::now();
    }

    /// The user `name` as currently stored (a session checks it on every request).
    pub fn get(&self, name: &str) -> Option<UserRecord> {
        self.refresh();
        self.state
            .read()
            .users
            .iter()
            .find(|u| u.name == name)
            .cloned()
    }

    /// Checks a name and password. Slow on purpose (argon2id): call off the async runtime.
    pub fn verify(&self, name: &str, password: &str) -> Option<UserRecord> {
        // A changed file is read now, not within a second: a user just added offline signs in.
        let _ = self.reload();
        match self.get(name) {
            Some(u) if check_password(&u.hash, password) => Some(u),
            Some(_) => None,
            None => {
                check_password(&self.dummy_hash, password);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.refresh();
        self.state.read().users.is_empty()
    }

    pub fn list(&self) -> Result<Vec<UserRecord>, UserStoreError> {
        self.reload()?;
        Ok(self.state.read().users.clone())
    }

    pub fn add(
        &self,
        name: &str,
        password: &str,
        role: UserRole,
        tenant: Option<Tenant>,
    ) -> Result<UserRecord, UserStoreError> {
        check_name(name)?;
        check_password_strength(password)?;
        if tenant.is_none() && role != UserRole::Admin {
            return Err(UserStoreError::Invalid(
                "only admins may be for every tenant".into(),
            ));
        }
        let hash = hash_password(password)?;
        self.locked(|users| {
            if users.iter().any(|u| u.name == name) {
                return Err(UserStoreError::Exists(name.to_string()));
            }
            let now = now_s();
            let record = UserRecord {
                name: name.to_string(),
                role,
                tenant,
                hash,
                created_at: now,
                password_set_at: now,
            };
            users.push(record.clone());
            Ok(record)
        })
    }

    pub fn delete(&self, name: &str) -> Result<UserRecord, UserStoreError> {
        self.locked(|users| {
            let i = users
                .iter()
                .position(|u| u.name == name)
                .ok_or_else(|| UserStoreError::NoSuchUser(name.to_string()))?;
            Ok(users.remove(i))
        })
    }

    /// Sets a new password; the user's open sessions end.
    pub fn reset_password(&self, name: &str, password: &str) -> Result<UserRecord, UserStoreError> {
        check_password_strength(password)?;
        let hash = hash_password(password)?;
        self.locked(|users| {
            let u = users
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| UserStoreError::NoSuchUser(name.to_string()))?;
            u.hash = hash;
            // Strictly later than any session opened in the same second.
            u.password_set_at = now_s().max(u.password_set_at) + 1;
            Ok(u.clone())
        })
    }

    fn locked<T>(
        &self,
        f: impl FnOnce(&mut Vec<UserRecord>) -> Result<T, UserStoreError>,
    ) -> Result<T, UserStoreError> {
        keys::create_private_dir(&self.dir)?;
        let lock_path = self.dir.join("users.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(keys::io(&lock_path))?;
        lock.lock().map_err(keys::io(&lock_path))?;
        let mut users = self.read()?;
        let out = f(&mut users)?;
        let json =
            serde_json::to_vec_pretty(&UserFile { version: 1, users }).expect("users serialize");
        keys::write_atomically(&self.path(), &json)?;
        drop(lock);
        self.reload()?;
        Ok(out)
    }
}

/// First start with auth on and no users: creates `admin` with `KILN_ADMIN_PASSWORD` or a
/// random password, which is logged this once.
pub fn bootstrap(store: &UserStore) -> Result<(), UserStoreError> {
    if !store.is_empty() {
        return Ok(());
    }
    let (password, given) = match std::env::var("KILN_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, true),
        _ => (random_password()?, false),
    };
    let user = store.add("admin", &password, UserRole::Admin, None)?;
    super::admin::audit("user.add", "bootstrap", "*", &user.name);
    if given {
        tracing::warn!(
            "auth is on and there were no users: created user `admin` (role admin, every tenant) with the password from KILN_ADMIN_PASSWORD"
        );
    } else {
        // The one place a password is ever written out: there is no other way to hand it over.
        tracing::warn!(
            "auth is on and there were no users: created user `admin` (role admin, every tenant) with password {password} — it is shown only now; change it with `kiln admin user reset-password admin`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_verify_by_argon2id_and_reach_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert!(store.is_empty());
        store
            .add(
                "ann",
                "correct horse",
                UserRole::Editor,
                Some(Tenant::default()),
            )
            .unwrap();
        let on_disk = std::fs::read_to_string(dir.path().join("auth/users.json")).unwrap();
        assert!(on_disk.contains("$argon2id$") && !on_disk.contains("correct horse"));
        assert!(store.verify("ann", "correct horse").is_some());
        assert!(store.verify("ann", "wrong horse").is_none());
        assert!(store.verify("bob", "correct horse").is_none());
        assert!(matches!(
            store.add(
                "ann",
                "whatever1",
                UserRole::Viewer,
                Some(Tenant::default())
            ),
            Err(UserStoreError::Exists(_))
        ));
        assert!(store
            .add("x", "short", UserRole::Viewer, Some(Tenant::default()))
            .is_err());
        assert!(store
            .add(
                "a b",
                "long enough",
                UserRole::Viewer,
                Some(Tenant::default())
            )
            .is_err());
        assert!(store
            .add("v", "long enough", UserRole::Viewer, None)
            .is_err());

        let other = UserStore::open(dir.path()).unwrap();
        let before = other.get("ann").unwrap().password_set_at;
        other.reset_password("ann", "battery staple").unwrap();
        assert!(store.verify("ann", "battery staple").is_some());
        assert!(store.verify("ann", "correct horse").is_none());
        assert!(other.get("ann").unwrap().password_set_at > before);
        other.delete("ann").unwrap();
        assert!(store.verify("ann", "battery staple").is_none());
        assert!(matches!(
            other.delete("ann"),
            Err(UserStoreError::NoSuchUser(_))
        ));
    }
}
