//! UI sessions and the login rate limit.
//!
//! A session is a random id in the `kiln_session` cookie and a record in this daemon's memory:
//! the user, when it was opened, when it expires, and its CSRF token. Only a hash of the id is
//! kept as the map key. A restart ends every session (people sign in again); a deleted user or
//! a password reset ends that user's sessions on their next request.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use super::keys::{self, now_s, KeyStoreError};

pub const COOKIE: &str = "kiln_session";
/// The header a cookie-authenticated state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// Unix seconds: checked against the user's `password_set_at`.
    pub opened_at: i64,
    pub expires: Instant,
    pub csrf: String,
}

impl Session {
    /// Constant-time comparison of a presented CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

fn token() -> Result<String, KeyStoreError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(keys::random::<32>()?))
}

fn key(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

/// Upper bound on open sessions, so a login loop cannot grow memory without end.
const MAX_SESSIONS: usize = 100_000;

pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `user`: (cookie value, session).
    pub fn open(&self, user: &str) -> Result<(String, Session), KeyStoreError> {
        let id = token()?;
        let session = Session {
            user: user.to_string(),
            opened_at: now_s(),
            expires: Instant::now() + self.ttl,
            csrf: token()?,
        };
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                // Drop the session closest to its end.
                if let Some(k) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                    map.remove(&k);
                }
            }
        }
        map.insert(key(&id), session.clone());
        Ok((id, session))
    }

    /// The live session of cookie value `id`; an expired one is removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock();
        let k = key(id);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) -> Option<Session> {
        self.map.lock().remove(&key(id))
    }
}

/// Failed logins per user name and per client address within a sliding minute.
pub struct LoginLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, peer: Option<IpAddr>) -> [String; 2] {
        [
            format!("user:{user}"),
            format!(
                "addr:{}",
                peer.map_or_else(|| "-".into(), |p| p.to_string())
            ),
        ]
    }

    /// `Some(seconds to wait)` when `user` or `peer` has used up its failures.
    pub fn blocked(&self, user: &str, peer: Option<IpAddr>) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.failures.lock();
        let mut wait = None;
        for k in Self::keys(user, peer) {
            if let Some(q) = map.get_mut(&k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max {
                    let left = self.window - now.duration_since(q[0]);
                    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    wait = Some(wait.unwrap_or(0).max(secs.max(1)));
                }
            }
        }
        wait
    }

    pub fn failed(&self, user: &str, peer: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.failures.lock();
        // Forget idle entries now and then, so the map stays small.
        if map.len() > 10_000 {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        for k in Self::keys(user, peer) {
            let q = map.entry(k).or_default();
            q.push_back(now);
            while q.len() > self.max.max(1) {
                q.pop_front();
            }
        }
    }

    /// A successful login clears the user's failures (not the address's).
    pub fn succeeded(&self, user: &str) {
        self.failures.lock().remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_millis(50));
        let (id, session) = s.open("ann").unwrap();
        let (id2, _) = s.open("ann").unwrap();
        assert_ne!(id, id2);
        assert_eq!(s.get(&id).unwrap().user, "ann");
        assert!(session.csrf_matches(&session.csrf) && !session.csrf_matches("x"));
        assert!(s.close(&id2).is_some() && s.get(&id2).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn limiter_blocks_after_max_failures_per_user_and_per_address() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        l.failed("ann", Some(a));
        assert!(l.blocked("ann", Some(a)).is_none());
        l.failed("ann", Some(a));
        assert!(l.blocked("ann", Some(b)).is_some(), "per user");
        assert!(l.blocked("bob", Some(a)).is_some(), "per address");
        assert!(l.blocked("bob", Some(b)).is_none());
    }
}
