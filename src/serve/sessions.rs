//! Browser sessions: the pages' cookie holds a random session id, never the API token.
//!
//! The server keeps only the SHA-256 of each id (in `STATE_DIR/sessions.json`, 0600),
//! with when it began, when it was last used, and the browser and address it began
//! from. A session ends when it has been idle too long, when it is too old, when its
//! browser signs out, when it is revoked from the Sessions page or the API, and when the
//! token is rotated. A restart keeps the sessions that have not ended. Replicas
//! (`--store`) share them in the table: a browser moving between replicas keeps its
//! session, and one ended on any replica ends on all within two seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::SharedDoc;

/// How long a session may go unused, and how long it may last at most.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            idle: Duration::from_secs(12 * 3600),
            absolute: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What is kept of one session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// Unix seconds.
    pub began: u64,
    pub last_used: u64,
    /// The browser's `User-Agent`, shortened.
    pub browser: String,
    /// The address it signed in from.
    pub address: String,
}

/// A session as the Sessions page and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Names the session without giving it away: the first 16 hex digits of the SHA-256
    /// of its id.
    pub id: String,
    #[serde(flatten)]
    pub session: Session,
    pub expires: u64,
}

/// Every session that has not ended.
#[derive(Debug)]
pub struct Sessions {
    path: Option<PathBuf>,
    lifetimes: Lifetimes,
    /// SHA-256 (hex) of the session id → the session.
    by_digest: Mutex<BTreeMap<String, Session>>,
    /// With replicas: the sessions every replica shares (`sessions` in the table);
    /// `by_digest` is this replica's copy.
    shared: Option<SharedDoc<BTreeMap<String, Session>>>,
}

type Map = BTreeMap<String, Session>;

/// Last-use times are written to disk at most this often per session.
const TOUCH_EVERY: u64 = 60;

/// With replicas: how old this replica's copy of the sessions may be when it has the
/// session asked for (so a session ended on another replica ends here within it). One
/// it has not is looked for in the table at once (begun on another replica a moment
/// ago).
const SHARED_FRESH: Duration = Duration::from_secs(2);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn digest(id: &str) -> String {
    let d = Sha256::digest(id.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn handle(digest: &str) -> String {
    digest[..16].to_string()
}

impl Sessions {
    /// The sessions kept in `state_dir`; with `end_all` (a rotated token) none survive.
    pub fn load(state_dir: &Path, lifetimes: Lifetimes, end_all: bool) -> Sessions {
        let path = state_dir.join("sessions.json");
        let by_digest = if end_all {
            BTreeMap::new()
        } else {
            std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        };
        let sessions = Sessions {
            path: Some(path),
            lifetimes,
            by_digest: Mutex::new(by_digest),
            shared: None,
        };
        sessions.save(&mut sessions.lock());
        sessions
    }

    /// The sessions the replicas share in `table`; with `end_all` (a rotated token)
    /// none survive, on any replica.
    pub fn shared(
        table: std::sync::Arc<dyn crate::store::Store>,
        lifetimes: Lifetimes,
        end_all: bool,
    ) -> Sessions {
        let sessions = Sessions {
            path: None,
            lifetimes,
            by_digest: Mutex::new(BTreeMap::new()),
            shared: Some(SharedDoc::new(table, "sessions")),
        };
        if end_all {
            sessions.end_all();
        }
        sessions
    }

    /// Sessions kept in memory only (unit tests).
    pub fn in_memory(lifetimes: Lifetimes) -> Sessions {
        Sessions {
            path: None,
            lifetimes,
            by_digest: Mutex::new(BTreeMap::new()),
            shared: None,
        }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, s: &Session, at: u64) -> bool {
        at < s.last_used.saturating_add(self.lifetimes.idle.as_secs())
            && at < s.began.saturating_add(self.lifetimes.absolute.as_secs())
    }

    /// Drops the ended sessions and writes the rest.
    fn save(&self, map: &mut Map) {
        let at = now();
        map.retain(|_, s| self.live(s, at));
        if let Some(path) = &self.path {
            let text = serde_json::to_vec_pretty(&*map).expect("serializes");
            if let Err(e) = super::store::write_atomic(path, &text) {
                tracing::warn!("cannot keep the sessions in {}: {e}", path.display());
            }
        }
    }

    /// Changes the sessions with `change` (false: it changed nothing) and keeps them,
    /// ended ones dropped; what `change` said.
    fn apply(&self, mut change: impl FnMut(&mut Map) -> bool) -> bool {
        let Some(doc) = &self.shared else {
            let mut map = self.lock();
            let changed = change(&mut map);
            if changed {
                self.save(&mut map);
            }
            return changed;
        };
        let mut changed = false;
        let kept = doc.change(|map| {
            changed = change(map);
            let before = map.len();
            let at = now();
            map.retain(|_, s| self.live(s, at));
            changed || map.len() != before
        });
        match kept {
            Ok(map) => *self.lock() = map,
            Err(e) => tracing::warn!("cannot keep the sessions in the shared store: {e}"),
        }
        changed
    }

    /// With replicas: this replica's copy, read again when older than it may be for
    /// the session `key` (or for a list, with None).
    fn refresh(&self, key: Option<&str>) {
        let Some(doc) = &self.shared else {
            return;
        };
        let here = key.is_none_or(|k| self.lock().contains_key(k));
        let map = doc.read(if here { SHARED_FRESH } else { Duration::ZERO });
        *self.lock() = map;
    }

    /// Begins a session; returns its id (the cookie's value).
    pub fn begin(&self, browser: &str, address: &str) -> String {
        let id = super::api_token::fresh();
        let at = now();
        let browser: String = browser
            .chars()
            .filter(|c| !c.is_control())
            .take(160)
            .collect();
        let key = digest(&id);
        let session = Session {
            began: at,
            last_used: at,
            browser,
            address: address.to_string(),
        };
        self.apply(|map| {
            map.insert(key.clone(), session.clone());
            true
        });
        id
    }

    /// The handle of the session `id` when it is live; its last use becomes now.
    pub fn check(&self, id: &str) -> Option<String> {
        let key = digest(id);
        let at = now();
        self.refresh(Some(&key));
        let mut map = self.lock();
        let session = map.get_mut(&key)?;
        if !self.live(session, at) {
            drop(map);
            self.apply(|map| map.remove(&key).is_some());
            return None;
        }
        let write = at >= session.last_used + TOUCH_EVERY;
        session.last_used = at;
        drop(map);
        if write {
            self.apply(|map| match map.get_mut(&key) {
                Some(s) => {
                    s.last_used = at;
                    true
                }
                None => false,
            });
        }
        Some(handle(&key))
    }

    /// Ends the session named by `handle`; false when there is none.
    pub fn end(&self, handle_: &str) -> bool {
        self.apply(|map| {
            let before = map.len();
            map.retain(|k, _| handle(k) != handle_);
            map.len() != before
        })
    }

    /// Ends every session.
    pub fn end_all(&self) {
        self.apply(|map| {
            map.clear();
            true
        });
    }

    /// The live sessions, most recently used first.
    pub fn list(&self) -> Vec<SessionView> {
        self.refresh(None);
        let at = now();
        let map = self.lock();
        let mut out: Vec<SessionView> = map
            .iter()
            .filter(|(_, s)| self.live(s, at))
            .map(|(k, s)| SessionView {
                id: handle(k),
                session: s.clone(),
                expires: (s.last_used + self.lifetimes.idle.as_secs())
                    .min(s.began + self.lifetimes.absolute.as_secs()),
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.session.last_used));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_random_id_kept_hashed_and_ends_when_idle_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let life = Lifetimes::default();
        let s = Sessions::load(dir.path(), life, false);
        let id = s.begin("Mozilla/5.0\n(X11)", "127.0.0.1");
        assert_eq!(id.len(), 43);
        let h = s.check(&id).expect("live");
        assert_eq!(h.len(), 16);
        assert!(s.check("not-a-session").is_none());
        let kept = std::fs::read_to_string(dir.path().join("sessions.json")).unwrap();
        assert!(!kept.contains(&id), "the id itself is never written");
        assert!(kept.contains("Mozilla/5.0(X11)"));
        // A restart keeps it; a rotation ends it.
        assert!(Sessions::load(dir.path(), life, false).check(&id).is_some());
        assert!(Sessions::load(dir.path(), life, true).check(&id).is_none());
        assert!(Sessions::load(dir.path(), life, false).check(&id).is_none());
    }

    #[test]
    fn idle_and_absolute_lifetimes_end_sessions() {
        let s = Sessions::in_memory(Lifetimes {
            idle: Duration::from_secs(3600),
            absolute: Duration::from_secs(7200),
        });
        let id = s.begin("b", "a");
        let key = digest(&id);
        let at = now();
        s.lock().get_mut(&key).unwrap().last_used = at - 3601;
        assert!(s.check(&id).is_none(), "idle for more than an hour");
        let id = s.begin("b", "a");
        let key = digest(&id);
        s.lock().get_mut(&key).unwrap().began = at - 7201;
        assert!(
            s.check(&id).is_none(),
            "older than two hours, though in use"
        );
        let id = s.begin("b", "a");
        let h = s.check(&id).unwrap();
        assert_eq!(s.list().len(), 1);
        assert!(s.end(&h));
        assert!(!s.end(&h));
        assert!(s.check(&id).is_none());
    }

    #[test]
    fn replicas_share_sessions_and_an_end_on_one_ends_it_on_the_other() {
        let table: std::sync::Arc<dyn crate::store::Store> =
            std::sync::Arc::new(crate::store::memory::MemoryStore::default());
        let life = Lifetimes::default();
        let mut a = Sessions::shared(table.clone(), life, false);
        let b = Sessions::shared(table.clone(), life, false);
        let id = a.begin("browser", "10.0.0.1");
        let other = b.begin("browser", "10.0.0.2");
        let h = b.check(&id).expect("begun on A, known to B");
        assert!(a.check(&other).is_some());
        assert_eq!(a.list().len(), 2);
        assert!(b.end(&h));
        // A's copy is fresh still (up to SHARED_FRESH); read again, the session is over.
        assert!(a.check(&id).is_some());
        a.shared = Some(crate::store::SharedDoc::new(table.clone(), "sessions"));
        assert!(a.check(&id).is_none());
        // A rotated token ends every replica's sessions.
        let _rotated = Sessions::shared(table.clone(), life, true);
        let c = Sessions::shared(table, life, false);
        assert!(c.check(&other).is_none());
        assert!(c.list().is_empty());
    }
}
