//! What the server keeps on disk under its state directory: each launch's record
//! (`launches/ID.json`) and event log (`launches/ID.events`, one JSON event a line, its
//! id is its line number), and the Idempotency-Key table (`idempotency.json`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a launch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchState {
    Queued,
    Running,
    Cancelling,
    Succeeded,
    /// Over with nothing failed, but some workspaces left out (skipped for quota, or
    /// still waiting for it when the wait ended).
    PartlyDone,
    Failed,
    Cancelled,
    Interrupted,
}

impl LaunchState {
    /// Whether the launch's run is going on.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            LaunchState::Queued | LaunchState::Running | LaunchState::Cancelling
        )
    }
}

/// What a launch was asked to do, kept so that a resume can do it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The manifest's text.
    pub manifest: String,
    /// The file under `--manifests` it came from, if any.
    pub manifest_path: Option<String>,
    pub allow_partial: bool,
    /// Consent to delete the workspaces the manifest no longer wants.
    #[serde(default)]
    pub allow_delete: bool,
    /// How long workspaces without room in a quota wait for it (as `apply
    /// --wait-for-quota`), as sent, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_quota: Option<String>,
}

impl Request {
    /// `wait_for_quota` as a duration; Err says why it is not one.
    pub fn quota_wait(&self) -> Result<Option<std::time::Duration>, String> {
        quota_wait(self.wait_for_quota.as_deref())
    }
}

/// The longest `wait_for_quota`: a week, more than AWS takes to answer an increase.
pub const QUOTA_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A `wait_for_quota` text as a duration (up to [`QUOTA_WAIT_MAX`]); Err says why it is
/// not one.
pub fn quota_wait(text: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    text.map(|text| {
        let d = humantime::parse_duration(text)
            .map_err(|e| format!("wait_for_quota `{text}` is not a duration such as 30m: {e}"))?;
        if d > QUOTA_WAIT_MAX {
            return Err(format!(
                "wait_for_quota `{text}` is longer than a week (168h): a launch holds its region's turn while it waits"
            ));
        }
        Ok(d)
    })
    .transpose()
}

/// A launch as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub fleet: String,
    pub state: LaunchState,
    pub created_at: String,
    /// Milliseconds since the epoch, for newest-first order.
    pub created_ms: u128,
    pub request: Request,
    /// The latest progress, as the API shows it.
    pub progress: Value,
    pub workspaces: Value,
    /// The final report of the last run, once over.
    pub report: Option<Value>,
    /// Why the run could not start when its turn in the queue came (catalogue shape).
    #[serde(default)]
    pub error: Option<Value>,
}

/// The files of the state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Writes `bytes` to `path` through a new file renamed over it, so a crash leaves the
/// old or the new version, never half of one. Readable by the server's user alone
/// (0600): a launch record holds the manifest's text, members included.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.to_path_buf(),
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join("launches").join(format!("{id}.json"))
    }

    fn events_path(&self, id: &str) -> PathBuf {
        self.dir.join("launches").join(format!("{id}.events"))
    }

    pub fn save(&self, record: &Record) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).expect("serializes");
        write_atomic(&self.record_path(&record.id), &bytes)
    }

    /// Appends one event (its JSON on one line).
    pub fn append_event(&self, id: &str, json: &str) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.events_path(id))?;
        f.write_all(format!("{json}\n").as_bytes())
    }

    /// Every launch kept, with its events (a line cut short by a crash is dropped).
    pub fn load_all(&self) -> Vec<(Record, Vec<String>)> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("launches")) else {
            return vec![];
        };
        let mut out = vec![];
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(record) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            else {
                tracing::warn!("skipping the unreadable launch record {}", path.display());
                continue;
            };
            let events = std::fs::read_to_string(self.events_path(&record.id))
                .unwrap_or_default()
                .lines()
                .take_while(|l| serde_json::from_str::<Value>(l).is_ok())
                .map(str::to_string)
                .collect();
            out.push((record, events));
        }
        out
    }

    /// The Idempotency-Key table: key → (SHA-256 of the request body, launch id).
    pub fn load_keys(&self) -> BTreeMap<String, (String, String)> {
        std::fs::read(self.dir.join("idempotency.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_keys(&self, keys: &BTreeMap<String, (String, String)>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(keys).expect("serializes");
        write_atomic(&self.dir.join("idempotency.json"), &bytes)
    }
}
