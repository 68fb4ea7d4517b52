//! Where each workspace's latest launch went, for a rerun that comes before AWS shows it.
//!
//! ClientTokens are zonal, and each instance type has its own: a launch that fell back
//! to another zone, or to a fallback type, used that zone's and type's token. A rerun
//! right after it, while DescribeInstances still lags, plans the workspace again and
//! would send the first-choice token, which AWS has never seen: a second instance. So
//! before each launch call prism notes the zone, type and incarnation of the token it
//! sends, and the next launch of that workspace sends that token first. The note is
//! kept in memory for a long-running process and, for reruns of the CLI, in a small
//! file that expires entries well past AWS's consistency lag.
//!
//! Every launch is noted, its first choice too: a rerun that would launch the
//! workspace in a batch (see `launch_batch`) must send its own token instead. A run
//! claims its launches before any call ([`LaunchNotes::claim`]): a workspace another
//! run on the machine claimed a moment ago is sent as that run noted it, never with a
//! token of its own.
//!
//! The file also says who sent each token first. Two runs at once on one machine both
//! launch a workspace with the same token; AWS starts one instance and answers both
//! with it. Each run writes down when it sent the token and what came back, keeping the
//! earliest sender; the later run finds the other's entry and says the instance was
//! already launched by another run, instead of claiming it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{LeaseKeeper, StoreError};

/// How long a note is trusted: far longer than DescribeInstances lags behind a launch.
pub const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);

/// The token a workspace's latest launch used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLaunch {
    /// The zone asked for; None when AWS chose.
    pub zone: Option<String>,
    /// The fallback type launched; None for the template's own type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    pub incarnation: u32,
    /// What was launched: a changed spec has other tokens, so the note no longer applies.
    pub spec_digest: String,
    /// Seconds since the epoch when the call was made.
    pub at: u64,
    /// The ClientToken of the batch it was launched in, when it was (see
    /// [`BatchNote`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// What [`LaunchNotes::claim`] gives back.
#[derive(Debug, Default)]
pub struct Claim {
    /// Workspaces a recent note claims already, with that note.
    pub taken: BTreeMap<String, LastLaunch>,
    /// The batches composed and noted: token and note.
    pub batches: Vec<(String, BatchNote)>,
}

/// A RunInstances of many instances: its ClientToken makes the whole call idempotent,
/// so a rerun sends the same call again (same members, same order, same zone) and gets
/// the same instances back, each at its launch index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchNote {
    pub fleet: String,
    /// Past how many batches of these workspaces, whose instances were terminated, its
    /// token is (AWS answers a token whose instances are all gone with
    /// IdempotentInstanceTerminated).
    #[serde(default)]
    pub incarnation: u32,
    /// The workspaces in launch-index order.
    pub members: Vec<String>,
    pub zone: Option<String>,
    pub spec_digest: String,
    /// Seconds since the epoch when the call was made.
    pub at: u64,
}

/// Who first sent a ClientToken, and the instance AWS answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The process that sent it: see [`LaunchNotes::owner`].
    pub owner: String,
    /// Milliseconds since the epoch when the call was made.
    pub at_ms: u64,
    pub instance_id: String,
    /// The fleet launched for, and the type launched (plans count it against the
    /// quota while AWS does not show it yet).
    #[serde(default)]
    pub fleet: String,
    #[serde(default)]
    pub instance_type: String,
}

/// A launch another prism process on the machine made recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    pub fleet: String,
    pub instance_id: String,
    pub instance_type: String,
}

/// Which token a launch sends, besides the fleet, the workspace and the template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenChoice {
    pub zone: Option<String>,
    /// The fallback type; None for the template's own type.
    pub instance_type: Option<String>,
    pub incarnation: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Notes {
    /// `fleet/workspace` → its latest launch.
    #[serde(default)]
    launches: BTreeMap<String, LastLaunch>,
    /// ClientToken → its first sender.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sent: BTreeMap<String, Sent>,
    /// ClientToken → the batch it launched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    batches: BTreeMap<String, BatchNote>,
}

impl Notes {
    /// Drops the notes older than `ttl`.
    fn expire(&mut self, ttl: Duration) {
        let t = now();
        let ttl = ttl.as_secs();
        self.launches.retain(|_, n| t.saturating_sub(n.at) < ttl);
        self.sent
            .retain(|_, s| t.saturating_sub(s.at_ms / 1000) < ttl);
        self.batches.retain(|_, b| t.saturating_sub(b.at) < ttl);
    }
}

/// The notes of one account and region.
#[derive(Debug)]
pub struct LaunchNotes {
    /// Where the notes are kept beside this process's memory.
    shelf: Option<Shelf>,
    notes: Mutex<Notes>,
    ttl: Duration,
    /// This process, as other processes see it in the file.
    owner: String,
}

fn key(fleet: &str, workspace: &str) -> String {
    format!("{fleet}/{workspace}")
}

fn now() -> u64 {
    now_ms() / 1000
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn owner() -> String {
    format!("{}-{:08x}", std::process::id(), fastrand::u32(..))
}

impl LaunchNotes {
    /// Notes kept in this process only (`watch`, `serve`, tests).
    pub fn in_memory() -> Self {
        Self::kept_on(None)
    }

    fn kept_on(shelf: Option<Shelf>) -> Self {
        LaunchNotes {
            shelf,
            notes: Mutex::new(Notes::default()),
            ttl: REMEMBER_FOR,
            owner: owner(),
        }
    }

    /// Notes kept in `file` as well, shared with later runs and other processes.
    pub fn in_file(file: PathBuf) -> Self {
        Self::kept_on(Some(Shelf::File(file)))
    }

    /// Notes kept in the store the replicas share, under `lease`: written only while
    /// this process holds it.
    pub fn in_store(lease: Arc<LeaseKeeper>) -> Self {
        Self::kept_on(Some(Shelf::Store(lease)))
    }

    /// Whether this process may not launch now: its notes are kept under a lease it
    /// does not hold (lost, or never taken), so it cannot note a launch first.
    pub fn fenced(&self) -> bool {
        matches!(&self.shelf, Some(Shelf::Store(k)) if k.lease().is_none())
    }

    /// The file for `account`'s `region` behind `endpoint` (None: AWS itself), so that
    /// fleets of two accounts in one region never share notes (an unknown account has
    /// the region's own file): in
    /// the machine's folder ([`shared_dir`]) when it exists and this user may write
    /// there, so that every prism process on the machine reads the same notes whoever
    /// runs it; else under the user's cache folder. None when there is neither.
    pub fn default_file(
        account: Option<&str>,
        region: &str,
        endpoint: Option<&str>,
    ) -> Option<PathBuf> {
        let base = match notes_base()? {
            Base::Machine(dir) => dir,
            Base::User(dir, machine) => {
                if let Some(machine) = machine {
                    tracing::warn!(
                        "launch notes are kept in {} because {} is not writable by this user: prism run by another user (such as a `prism watch` service) does not see this run's launches, and may launch a workspace again while AWS lags; give this user write access to {}",
                        dir.display(),
                        machine.display(),
                        machine.display()
                    );
                }
                dir
            }
        };
        let mut place = match account {
            Some(id) => format!("{id}-{region}"),
            None => region.to_string(),
        };
        if let Some(url) = endpoint {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(url.as_bytes());
            let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            place = format!("{place}-{short}");
        }
        Some(base.join("launches").join(format!("{place}.json")))
    }

    /// How many launches are noted in this process.
    pub fn len(&self) -> usize {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .launches
            .len()
    }

    /// Whether no launch is noted in this process.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest launch of `workspace`, if it is recent and of the same spec.
    pub fn recall(&self, fleet: &str, workspace: &str, spec_digest: &str) -> Option<LastLaunch> {
        let k = key(fleet, workspace);
        let from_file = self.shelf.as_ref().and_then(|s| s.read().ok());
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        // The file, when it can be read, is what every process agrees on: it may hold a
        // later launch made by another process, or have dropped a note another process
        // released (a batch refused, a workspace left out of one).
        if let Some(mut file_notes) = from_file {
            match file_notes.launches.remove(&k) {
                Some(n) => notes.launches.insert(k.clone(), n),
                None => notes.launches.remove(&k),
            };
        }
        let note = notes.launches.get(&k)?;
        (note.spec_digest == spec_digest && now().saturating_sub(note.at) < self.ttl.as_secs())
            .then(|| note.clone())
    }

    /// Notes the token about to be sent for `workspace` (`spec_digest` is the
    /// template's), or with None that it is the first choice, which needs no note.
    /// Called before the call, so a crash or a lost answer cannot lose the note.
    pub fn remember(
        &self,
        fleet: &str,
        workspace: &str,
        spec_digest: &str,
        token: Option<&TokenChoice>,
    ) {
        let k = key(fleet, workspace);
        let note = token.map(|t| LastLaunch {
            zone: t.zone.clone(),
            instance_type: t.instance_type.clone(),
            incarnation: t.incarnation,
            spec_digest: spec_digest.to_string(),
            at: now(),
            batch: None,
        });
        {
            let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
            let unchanged = match &note {
                Some(n) => notes.launches.get(&k).is_some_and(|m| {
                    (&m.zone, &m.instance_type, m.incarnation, &m.batch)
                        == (&n.zone, &n.instance_type, n.incarnation, &n.batch)
                }),
                None => !notes.launches.contains_key(&k),
            };
            match &note {
                Some(n) => notes.launches.insert(k.clone(), n.clone()),
                None => notes.launches.remove(&k),
            };
            if unchanged && self.shelf.is_none() {
                return;
            }
        }
        if let Some(file) = &self.shelf
            && (note.is_some() || file.exists())
            && let Err(e) = file.update(self.ttl, |notes| match &note {
                Some(n) => notes.launches.insert(k.clone(), n.clone()).as_ref() != Some(n),
                None => notes.launches.remove(&k).is_some(),
            })
        {
            tracing::warn!(
                "could not note a launch in {}: {e}; a rerun within minutes may not find it",
                file
            );
        }
    }
}

impl LaunchNotes {
    /// Notes, before the call, the batch `token` launches: its `members` in order, in
    /// `zone`, and for each member that its latest launch is that batch. One write of
    /// the file for the whole batch.
    pub fn remember_batch(&self, token: &str, batch: &BatchNote) {
        let launch = LastLaunch {
            zone: batch.zone.clone(),
            instance_type: None,
            incarnation: 0,
            spec_digest: batch.spec_digest.clone(),
            at: batch.at,
            batch: Some(token.to_string()),
        };
        let write = |notes: &mut Notes| {
            for m in &batch.members {
                notes.launches.insert(key(&batch.fleet, m), launch.clone());
            }
            notes.batches.insert(token.to_string(), batch.clone());
            true
        };
        write(&mut self.notes.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(file) = &self.shelf
            && let Err(e) = file.update(self.ttl, write)
        {
            tracing::warn!(
                "could not note a launch in {}: {e}; a rerun within minutes may not find it",
                file
            );
        }
    }

    /// Claims, before any call, the launches a run is about to make, so that no other
    /// run on the machine sends another token for them: of `candidates` (workspaces of
    /// `fleet` to launch, the template's spec digest `digest`), those a recent note
    /// claims already (another run's, a moment ago) are given back with their notes;
    /// `compose` splits the rest into batches (token and note) and launches alone
    /// (workspace and first zone), and each is noted at once. Reading, composing and
    /// writing are one step under the notes' lock, in this process and in the file.
    pub fn claim<F>(&self, fleet: &str, digest: &str, candidates: &[String], compose: F) -> Claim
    where
        F: FnOnce(&[String]) -> (Vec<(String, BatchNote)>, Vec<(String, Option<String>)>),
    {
        let ttl = self.ttl.as_secs();
        let mut compose = Some(compose);
        let mut claim = |notes: &mut Notes| -> Claim {
            let t = now();
            let mut taken = BTreeMap::new();
            let mut free = vec![];
            for w in candidates {
                match notes.launches.get(&key(fleet, w)) {
                    Some(n) if n.spec_digest == digest && t.saturating_sub(n.at) < ttl => {
                        taken.insert(w.clone(), n.clone());
                    }
                    _ => free.push(w.clone()),
                }
            }
            let Some(compose) = compose.take() else {
                return Claim::default();
            };
            let (batches, alone) = compose(&free);
            for (token, b) in &batches {
                for m in &b.members {
                    notes.launches.insert(
                        key(fleet, m),
                        LastLaunch {
                            zone: b.zone.clone(),
                            instance_type: None,
                            incarnation: 0,
                            spec_digest: digest.to_string(),
                            at: t,
                            batch: Some(token.clone()),
                        },
                    );
                }
                notes.batches.insert(token.clone(), b.clone());
            }
            for (w, zone) in &alone {
                notes.launches.insert(
                    key(fleet, w),
                    LastLaunch {
                        zone: zone.clone(),
                        instance_type: None,
                        incarnation: 0,
                        spec_digest: digest.to_string(),
                        at: t,
                        batch: None,
                    },
                );
            }
            Claim { taken, batches }
        };
        let mut memory = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        // A long-running process (`watch`, `serve`) keeps only what is still trusted.
        memory.expire(self.ttl);
        if let Some(file) = &self.shelf {
            let mut out = None;
            let written = file.update(self.ttl, |notes| {
                let c = claim(notes);
                // What this process knows from now on.
                for (k, n) in &notes.launches {
                    memory.launches.insert(k.clone(), n.clone());
                }
                for (token, b) in &notes.batches {
                    memory.batches.insert(token.clone(), b.clone());
                }
                out = Some(c);
                true
            });
            if let Err(e) = written {
                tracing::warn!(
                    "could not note launches in {}: {e}; a rerun within minutes may not find them",
                    file
                );
            }
            if let Some(c) = out {
                return c;
            }
        }
        claim(&mut memory)
    }

    /// Forgets the batch `token` of `fleet`, which AWS refused outright (it launched
    /// nothing): a rerun must not send it again, which would launch its workspaces
    /// afresh, beside what they launch from now on.
    pub fn forget_batch(&self, fleet: &str, token: &str) {
        self.release(fleet, token, None);
    }

    /// Releases `members` from the batch `token` of `fleet`, for which AWS launched no
    /// instance (it launched fewer than asked, and answers a resend the same): their
    /// notes no longer name it, so they launch anew, while the batch stays noted for
    /// the instances it did launch.
    pub fn release_members(&self, fleet: &str, token: &str, members: &[String]) {
        self.release(fleet, token, Some(members));
    }

    /// Drops the notes of `members` (all: the batch itself too) that name batch `token`.
    fn release(&self, fleet: &str, token: &str, members: Option<&[String]>) {
        let forget = |notes: &mut Notes| {
            let gone: Vec<String> = match members {
                Some(m) => m.to_vec(),
                None => match notes.batches.remove(token) {
                    Some(b) => b.members,
                    None => return false,
                },
            };
            let mut changed = members.is_none();
            for m in &gone {
                let k = key(fleet, m);
                if notes
                    .launches
                    .get(&k)
                    .is_some_and(|n| n.batch.as_deref() == Some(token))
                {
                    notes.launches.remove(&k);
                    changed = true;
                }
            }
            changed
        };
        forget(&mut self.notes.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(file) = &self.shelf
            && let Err(e) = file.update(self.ttl, forget)
        {
            tracing::warn!("could not update the launch notes in {}: {e}", file);
        }
    }

    /// The batch launched with `token`, when noted and recent.
    pub fn recall_batch(&self, token: &str) -> Option<BatchNote> {
        let from_file = self.shelf.as_ref().and_then(|s| s.read().ok());
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        // As in `recall`, the file, when it can be read, is what every process agrees on.
        if let Some(mut file_notes) = from_file {
            match file_notes.batches.remove(token) {
                Some(b) => notes.batches.insert(token.to_string(), b),
                None => notes.batches.remove(token),
            };
        }
        let b = notes.batches.get(token)?;
        (now().saturating_sub(b.at) < self.ttl.as_secs()).then(|| b.clone())
    }
}

impl LaunchNotes {
    /// Writes down that this process sent `token` at `at_ms` and AWS answered with
    /// `instance_id`, unless another process sent it earlier. Only kept in the file:
    /// within one process every launch is its own.
    pub fn sent(&self, token: &str, at_ms: u64, launched: &Launched) {
        let Some(file) = &self.shelf else { return };
        let mine = Sent {
            owner: self.owner.clone(),
            at_ms,
            instance_id: launched.instance_id.clone(),
            fleet: launched.fleet.clone(),
            instance_type: launched.instance_type.clone(),
        };
        let written = file.update(self.ttl, |notes| {
            let first = notes
                .sent
                .get(token)
                .is_none_or(|s| s.instance_id != mine.instance_id || s.at_ms > mine.at_ms);
            if first {
                notes.sent.insert(token.to_string(), mine);
            }
            first
        });
        if let Err(e) = written {
            tracing::warn!("could not note a launch in {}: {e}", file);
        }
    }

    /// The launches noted in the last minutes (by any process on the machine), for
    /// plans to count while DescribeInstances does not show them yet.
    pub fn recent_launches(&self) -> Vec<Launched> {
        let Some(notes) = self.shelf.as_ref().and_then(|s| s.read().ok()) else {
            return vec![];
        };
        let t = now();
        notes
            .sent
            .into_values()
            .filter(|s| {
                !s.fleet.is_empty() && t.saturating_sub(s.at_ms / 1000) < self.ttl.as_secs()
            })
            .map(|s| Launched {
                fleet: s.fleet,
                instance_id: s.instance_id,
                instance_type: s.instance_type,
            })
            .collect()
    }

    /// Of `tokens` this process sent, those whose instance another process had launched
    /// first with the same token.
    pub fn launched_by_others<'a>(
        &self,
        tokens: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&'a str> {
        let Some(notes) = self.shelf.as_ref().and_then(|s| s.read().ok()) else {
            return vec![];
        };
        tokens
            .into_iter()
            .filter(|t| notes.sent.get(*t).is_some_and(|s| s.owner != self.owner))
            .collect()
    }
}

/// The machine-wide folder every prism process on the machine shares:
/// `PRISM_SHARED_DIR`, else `/var/lib/prism` (the systemd unit's `StateDirectory`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("PRISM_SHARED_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/lib/prism"), PathBuf::from)
}

enum Base {
    /// The machine's folder.
    Machine(PathBuf),
    /// The user's prism cache folder, with the machine's folder when that exists but
    /// is not writable by this user.
    User(PathBuf, Option<PathBuf>),
}

/// The folder the notes' `launches/` folder goes in; None without a home folder.
fn notes_base() -> Option<Base> {
    let machine = shared_dir();
    if machine.is_dir() && can_write(&machine.join("launches")) {
        return Some(Base::Machine(machine));
    }
    let user = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(Base::User(
        user.join("prism"),
        machine.is_dir().then_some(machine),
    ))
}

/// Whether files can be created in `dir` (made when missing).
fn can_write(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::create_dir_all(dir).is_ok()
        && std::fs::write(&probe, b"").is_ok()
        && std::fs::remove_file(&probe).is_ok()
}

/// Where notes are kept beyond one process: a file of the machine, or the store the
/// replicas share, written only under this process's lease.
#[derive(Debug)]
enum Shelf {
    File(PathBuf),
    Store(Arc<LeaseKeeper>),
}

/// Why notes could not be written.
#[derive(Debug, thiserror::Error)]
enum ShelfError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl std::fmt::Display for Shelf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shelf::File(file) => write!(f, "{}", file.display()),
            Shelf::Store(k) => write!(f, "the store's notes of {}", k.name),
        }
    }
}

/// Waits for `fut` from synchronous code, as a read or write of the notes file blocks:
/// the store is called in the same places, and runs its calls on a runtime of its own,
/// so waiting here never waits on the runtime this thread is part of.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures::executor::block_on(fut)
}

impl Shelf {
    fn exists(&self) -> bool {
        match self {
            Shelf::File(file) => file.exists(),
            Shelf::Store(_) => true,
        }
    }

    fn read(&self) -> Result<Notes, ShelfError> {
        match self {
            Shelf::File(file) => Ok(read(file)?),
            Shelf::Store(k) => {
                let body = block_on(k.store.read_notes(&k.name))?;
                Ok(body
                    .and_then(|b| serde_json::from_str(&b).ok())
                    .unwrap_or_default())
            }
        }
    }

    /// Reads, changes and writes the notes, dropping expired ones; `change` says
    /// whether it changed anything. In the store, only while this process holds the
    /// lease at the epoch it took: else nothing is written, and the lease is known
    /// lost ([`StoreError::Fenced`]).
    fn update(
        &self,
        ttl: Duration,
        change: impl FnOnce(&mut Notes) -> bool,
    ) -> Result<(), ShelfError> {
        let k = match self {
            Shelf::File(file) => return Ok(update(file, ttl, change)?),
            Shelf::Store(k) => k,
        };
        // One writer at a time in this process; the lease keeps out the others.
        let _turn = k.writing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lease) = k.lease() else {
            return Err(StoreError::Fenced(k.name.clone()).into());
        };
        let mut notes = self.read()?;
        if changed(&mut notes, ttl, change) {
            let body = serde_json::to_string(&notes).map_err(std::io::Error::other)?;
            if let Err(e) = block_on(k.store.write_notes(&lease, &body)) {
                if matches!(e, StoreError::Fenced(_)) {
                    k.lost();
                }
                return Err(e.into());
            }
        }
        Ok(())
    }
}

fn read(file: &Path) -> std::io::Result<Notes> {
    let text = std::fs::read(file)?;
    Ok(serde_json::from_slice(&text).unwrap_or_default())
}

/// Drops the expired notes, then applies `change` (which says whether it changed
/// anything): whether the notes are to be written again.
fn changed(notes: &mut Notes, ttl: Duration, change: impl FnOnce(&mut Notes) -> bool) -> bool {
    let before = (notes.launches.len(), notes.sent.len(), notes.batches.len());
    notes.expire(ttl);
    change(notes) || (notes.launches.len(), notes.sent.len(), notes.batches.len()) != before
}

/// Read, `change` and write the file, dropping expired notes; `change` says whether it
/// changed anything. Writers take turns on a lock file beside it; the new text replaces
/// the file in one rename, so a reader never sees half of it.
fn update(
    file: &Path,
    ttl: Duration,
    change: impl FnOnce(&mut Notes) -> bool,
) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(file.with_extension("lock"))?;
    // In the machine's folder, the other users of its group take turns on it too.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = lock.metadata()
            && meta.permissions().mode() & 0o020 == 0
        {
            let _ = lock.set_permissions(std::fs::Permissions::from_mode(0o664));
        }
    }
    lock.lock()?;
    let mut notes = read(file).unwrap_or_default();
    if changed(&mut notes, ttl, change) {
        let out = serde_json::to_vec_pretty(&notes).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        // Readable and writable by the group, as the lock file: every prism of the
        // machine's group (a `prism watch` service, its users) reads the same notes.
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o664))?;
        }
        tmp.write_all(&out)?;
        tmp.persist(file).map_err(|e| e.error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(zone: &str, instance_type: Option<&str>, incarnation: u32) -> TokenChoice {
        TokenChoice {
            zone: Some(zone.into()),
            instance_type: instance_type.map(str::to_string),
            incarnation,
        }
    }

    #[test]
    fn a_fallback_zone_is_recalled_and_the_default_is_not_noted() {
        let m = LaunchNotes::in_memory();
        m.remember("f", "f-01", "d", None);
        assert_eq!(m.recall("f", "f-01", "d"), None);
        m.remember("f", "f-01", "d", Some(&choice("us-west-2b", None, 0)));
        let n = m.recall("f", "f-01", "d").expect("noted");
        assert_eq!((n.zone.as_deref(), n.incarnation), (Some("us-west-2b"), 0));
        assert_eq!(m.recall("f", "f-01", "other spec"), None);
        assert_eq!(m.recall("f", "f-02", "d"), None);
        m.remember(
            "f",
            "f-01",
            "d",
            Some(&choice("us-west-2a", Some("m5.large"), 0)),
        );
        let n = m.recall("f", "f-01", "d").expect("noted");
        assert_eq!(n.instance_type.as_deref(), Some("m5.large"));
        // A later launch with the first choice replaces the note.
        m.remember("f", "f-01", "d", None);
        assert_eq!(m.recall("f", "f-01", "d"), None);
    }

    #[test]
    fn notes_in_a_file_reach_another_process_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launches/us-west-2.json");
        LaunchNotes::in_file(path.clone()).remember(
            "f",
            "f-01",
            "d",
            Some(&choice("us-west-2c", None, 2)),
        );
        let other = LaunchNotes::in_file(path.clone());
        let n = other.recall("f", "f-01", "d").expect("read from the file");
        assert_eq!((n.zone.as_deref(), n.incarnation), (Some("us-west-2c"), 2));

        let mut stale = LaunchNotes::in_file(path.clone());
        stale.ttl = Duration::ZERO;
        assert_eq!(stale.recall("f", "f-01", "d"), None, "expired");
        stale.remember("f", "f-02", "d", Some(&choice("us-west-2a", None, 0)));
        let kept: Notes = read(&path).unwrap();
        assert_eq!(
            kept.launches.keys().collect::<Vec<_>>(),
            ["f/f-02"],
            "expired notes are dropped on write"
        );
    }

    #[test]
    fn released_members_launch_anew_while_the_batch_stays_noted_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launches/us-west-2.json");
        let m = LaunchNotes::in_file(path.clone());
        let names: Vec<String> = ["f-01", "f-02", "f-03"].map(String::from).to_vec();
        let claim = m.claim("f", "d", &names, |free| {
            let note = BatchNote {
                fleet: "f".into(),
                incarnation: 0,
                members: free.to_vec(),
                zone: Some("us-west-2a".into()),
                spec_digest: "d".into(),
                at: now_ms() / 1000,
            };
            (vec![("tok".into(), note)], vec![])
        });
        assert_eq!(claim.batches.len(), 1);
        let batch_of = |m: &LaunchNotes, w: &str| m.recall("f", w, "d").and_then(|n| n.batch);
        m.release_members("f", "tok", &["f-02".into(), "f-03".into()]);
        let other = LaunchNotes::in_file(path);
        for notes in [&m, &other] {
            assert_eq!(batch_of(notes, "f-01").as_deref(), Some("tok"));
            assert_eq!(batch_of(notes, "f-02"), None, "released");
            assert!(notes.recall_batch("tok").is_some(), "kept for f-01");
        }
        m.forget_batch("f", "tok");
        for notes in [&m, &other] {
            assert_eq!(batch_of(notes, "f-01"), None);
            assert!(notes.recall_batch("tok").is_none());
        }
    }

    #[test]
    fn notes_in_the_store_are_written_only_under_the_lease_and_a_lost_lease_fences() {
        use crate::store::memory::MemoryStore;
        use crate::store::{LEASE_TTL, Standing, Store};
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let keeper = Arc::new(LeaseKeeper::new(store.clone(), "1/us-west-2".into()));
        let notes = LaunchNotes::in_store(keeper.clone());
        assert!(notes.fenced(), "no lease taken yet: no launch");
        let held = futures::executor::block_on(keeper.tick()).unwrap();
        assert!(matches!(held, Standing::Holding { epoch: 1, .. }));
        assert!(!notes.fenced());
        notes.remember("f", "f-01", "d", Some(&choice("us-west-2b", None, 0)));
        // Another replica reads what this one noted.
        let other = Arc::new(LeaseKeeper::new(store.clone(), "1/us-west-2".into()));
        let theirs = LaunchNotes::in_store(other.clone());
        let n = theirs
            .recall("f", "f-01", "d")
            .expect("shared through the store");
        assert_eq!(n.zone.as_deref(), Some("us-west-2b"));
        // This one stalls past its lease; the other takes it over.
        let later = keeper.lease().unwrap().until_ms + 1;
        let taken = futures::executor::block_on(store.acquire(
            &other.name,
            &other.holder,
            LEASE_TTL,
            later,
        ));
        assert_eq!(taken.unwrap().unwrap().epoch, 2);
        // Awake, it still thinks it holds the lease: its next note is refused, and from
        // then on it may not launch.
        assert!(!notes.fenced());
        notes.remember("f", "f-02", "d", Some(&choice("us-west-2c", None, 0)));
        assert!(notes.fenced(), "a refused note fences the process");
        assert_eq!(theirs.recall("f", "f-02", "d"), None, "nothing was written");
    }

    #[test]
    fn the_first_sender_of_a_token_is_kept_and_seen_by_the_other_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launches/us-west-2.json");
        let first = LaunchNotes::in_file(path.clone());
        let second = LaunchNotes::in_file(path.clone());
        let t = now_ms();
        let launched = |id: &str| Launched {
            fleet: "f".into(),
            instance_id: id.into(),
            instance_type: "t3.micro".into(),
        };
        second.sent("t-1", t - 100, &launched("i-1"));
        first.sent("t-1", t - 200, &launched("i-1"));
        second.sent("t-2", t, &launched("i-2"));
        // t-1 was sent first by `first`, although it wrote after `second`.
        assert_eq!(second.launched_by_others(["t-1", "t-2"]), ["t-1"]);
        assert!(first.launched_by_others(["t-1"]).is_empty());
        let mut recent: Vec<String> = first
            .recent_launches()
            .into_iter()
            .map(|l| l.instance_id)
            .collect();
        recent.sort();
        assert_eq!(recent, ["i-1", "i-2"], "every process sees every launch");
        // In memory only, every launch is this process's own.
        let alone = LaunchNotes::in_memory();
        alone.sent("t-1", 1, &launched("i-1"));
        assert!(alone.launched_by_others(["t-1"]).is_empty());
    }
}
