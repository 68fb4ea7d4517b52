//! What the server keeps: on one machine, under its state directory, each launch's
//! record (`launches/ID.json`) and event log (`launches/ID.events`, one JSON event a
//! line, its id is its line number), and the Idempotency-Key table
//! (`idempotency.json`).
//!
//! Replicas (`--store dynamodb://TABLE`) keep the same in the shared table instead:
//! `launch#ID` (the record), `events#ID#N` (events N, N+1 …, written together, each
//! chunk only where none is yet: the ids stay gap-free whoever writes them),
//! `launches` (the ids of every launch), `idempotency#KEY`. The replica running a
//! launch writes them under its lease's epoch, so a replica that lost the lease writes
//! nothing more.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::{Expect, Lease, StoreError};

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
    /// With replicas: the lease (`ACCOUNT/REGION`) whose holder runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Where it launches: `account 123456789012 (profile p), us-west-2` (the account
    /// when AWS says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// The files of the state directory, or the table replicas share.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    shared: Option<Arc<dyn crate::store::Store>>,
}

/// The largest chunk of events written as one item (DynamoDB's items hold 400 KB).
const CHUNK_BYTES: usize = 256 * 1024;

/// A launch as the `launches` index of the shared table names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Indexed {
    pub created_ms: u128,
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
            shared: None,
        }
    }

    /// The table replicas share, keeping what the state directory would.
    pub fn shared(state_dir: &Path, table: Arc<dyn crate::store::Store>) -> Store {
        Store {
            dir: state_dir.to_path_buf(),
            shared: Some(table),
        }
    }

    /// The shared table, with replicas.
    pub fn table(&self) -> Option<&Arc<dyn crate::store::Store>> {
        self.shared.as_ref()
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

fn record_key(id: &str) -> String {
    format!("launch#{id}")
}

fn events_key(id: &str, first: usize) -> String {
    format!("events#{id}#{first}")
}

fn cancel_key(id: &str) -> String {
    format!("cancel#{id}")
}

fn idempotency_key(key: &str) -> String {
    format!("idempotency#{key}")
}

const INDEX: &str = "launches";

/// What the shared table holds; each method is one or a few requests.
impl Store {
    fn table_or_err(&self) -> Result<&Arc<dyn crate::store::Store>, StoreError> {
        self.shared
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no shared store".into()))
    }

    /// Keeps a new launch: its record, then its id in the index.
    pub async fn create(&self, record: &Record) -> Result<(), StoreError> {
        let table = self.table_or_err()?;
        let body = serde_json::to_string(record).expect("serializes");
        table
            .put(&record_key(&record.id), &body, Expect::Absent, None)
            .await?;
        let (id, created_ms) = (record.id.clone(), record.created_ms);
        crate::store::update(
            table.as_ref(),
            INDEX,
            |index: &mut BTreeMap<String, Indexed>| {
                index.insert(id.clone(), Indexed { created_ms }).is_none()
            },
        )
        .await?;
        Ok(())
    }

    /// Writes a launch's record: under `fence` (the lease its runner holds), or, with
    /// none, as any replica may (a launch no replica runs).
    pub async fn put_record(
        &self,
        record: &Record,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        let table = self.table_or_err()?;
        let body = serde_json::to_string(record).expect("serializes");
        table
            .put(&record_key(&record.id), &body, Expect::Any, fence)
            .await
            .map(|_| ())
    }

    /// Writes events `first`, `first + 1` … of launch `id` under `fence`; false when
    /// another replica wrote `first` already.
    pub async fn put_events(
        &self,
        id: &str,
        first: usize,
        lines: &[String],
        fence: &Lease,
    ) -> Result<bool, StoreError> {
        let table = self.table_or_err()?;
        let body = serde_json::to_string(lines).expect("serializes");
        table
            .put(&events_key(id, first), &body, Expect::Absent, Some(fence))
            .await
    }

    /// Every launch id the table knows.
    pub async fn index(&self) -> Result<BTreeMap<String, Indexed>, StoreError> {
        let doc = self.table_or_err()?.get(INDEX).await?;
        Ok(doc
            .and_then(|d| serde_json::from_str(&d.body).ok())
            .unwrap_or_default())
    }

    /// A launch's record, as last written.
    pub async fn get_record(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let doc = self.table_or_err()?.get(&record_key(id)).await?;
        Ok(doc.and_then(|d| serde_json::from_str(&d.body).ok()))
    }

    /// The events of launch `id` from `first` on, as far as written.
    pub async fn events_from(&self, id: &str, first: usize) -> Result<Vec<String>, StoreError> {
        let table = self.table_or_err()?;
        let mut out = vec![];
        loop {
            let Some(doc) = table.get(&events_key(id, first + out.len())).await? else {
                return Ok(out);
            };
            let lines: Vec<String> = serde_json::from_str(&doc.body).unwrap_or_default();
            if lines.is_empty() {
                return Ok(out);
            }
            out.extend(lines);
        }
    }

    /// Asks the replica running launch `id` to cancel it.
    pub async fn request_cancel(&self, id: &str) -> Result<(), StoreError> {
        self.table_or_err()?
            .put(&cancel_key(id), "true", Expect::Any, None)
            .await
            .map(|_| ())
    }

    /// Whether a replica asked for launch `id` to be cancelled.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.table_or_err()?.get(&cancel_key(id)).await?.is_some())
    }

    /// The request hash and launch id the Idempotency-Key `key` was claimed for.
    pub async fn known_key(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        let doc = self.table_or_err()?.get(&idempotency_key(key)).await?;
        Ok(doc.and_then(|d| serde_json::from_str(&d.body).ok()))
    }

    /// Claims the Idempotency-Key `key` for the request hashed `hash` and the launch
    /// `id`; the claim that was there first, when another request made one. With
    /// `over`, the claim replaces one whose launch was never made.
    pub async fn claim_key(
        &self,
        key: &str,
        hash: &str,
        id: &str,
        over: bool,
    ) -> Result<Option<(String, String)>, StoreError> {
        let table = self.table_or_err()?;
        let body = serde_json::to_string(&(hash, id)).expect("serializes");
        let expect = if over { Expect::Any } else { Expect::Absent };
        loop {
            if table
                .put(&idempotency_key(key), &body, expect, None)
                .await?
            {
                return Ok(None);
            }
            if let Some(doc) = table.get(&idempotency_key(key)).await? {
                return Ok(serde_json::from_str(&doc.body).ok());
            }
        }
    }

    /// The chunks `lines` are written in: each below DynamoDB's item size.
    pub fn chunks(lines: &[String]) -> Vec<&[String]> {
        let mut out = vec![];
        let (mut start, mut size) = (0, 0);
        for (i, l) in lines.iter().enumerate() {
            if size + l.len() > CHUNK_BYTES && i > start {
                out.push(&lines[start..i]);
                (start, size) = (i, 0);
            }
            size += l.len() + 3;
        }
        if start < lines.len() {
            out.push(&lines[start..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_in_chunks_below_the_item_size() {
        let line = "x".repeat(100 * 1024);
        let lines = vec![line.clone(), line.clone(), line.clone(), "y".into()];
        let chunks = Store::chunks(&lines);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [2, 2],
            "at most {CHUNK_BYTES} bytes a chunk"
        );
        assert!(Store::chunks(&[]).is_empty());
        let one = ["z".repeat(300 * 1024)];
        assert_eq!(
            Store::chunks(&one).len(),
            1,
            "a long event is a chunk alone"
        );
    }

    #[tokio::test]
    async fn a_launch_kept_in_the_table_is_read_back_with_its_events_in_order() {
        let table: Arc<dyn crate::store::Store> =
            Arc::new(crate::store::memory::MemoryStore::default());
        let store = Store::shared(Path::new("/nonexistent"), table.clone());
        let record = Record {
            id: "bl-1".into(),
            fleet: "f".into(),
            state: LaunchState::Running,
            created_at: String::new(),
            created_ms: 1,
            request: Request {
                manifest: String::new(),
                manifest_path: None,
                allow_partial: false,
                allow_delete: false,
                wait_for_quota: None,
            },
            progress: Value::Null,
            workspaces: Value::Null,
            report: None,
            error: None,
            lease: Some("1/r".into()),
            place: None,
        };
        store.create(&record).await.unwrap();
        assert!(store.index().await.unwrap().contains_key("bl-1"));
        let lease = table
            .acquire("1/r", "me", crate::store::LEASE_TTL, 0)
            .await
            .unwrap()
            .unwrap();
        let lines = |r: std::ops::Range<u32>| r.map(|i| i.to_string()).collect::<Vec<_>>();
        assert!(
            store
                .put_events("bl-1", 1, &lines(1..4), &lease)
                .await
                .unwrap()
        );
        assert!(
            store
                .put_events("bl-1", 4, &lines(4..6), &lease)
                .await
                .unwrap()
        );
        // Event 4 is written: a second writer of it is refused, the ids stay gap-free.
        assert!(
            !store
                .put_events("bl-1", 4, &lines(9..10), &lease)
                .await
                .unwrap()
        );
        assert_eq!(store.events_from("bl-1", 1).await.unwrap(), lines(1..6));
        assert_eq!(store.events_from("bl-1", 4).await.unwrap(), lines(4..6));
        assert!(store.events_from("bl-1", 6).await.unwrap().is_empty());
        // Idempotency-Keys: the first claim stands.
        assert_eq!(
            store.claim_key("k", "h", "bl-1", false).await.unwrap(),
            None
        );
        assert_eq!(
            store.claim_key("k", "h", "bl-2", false).await.unwrap(),
            Some(("h".into(), "bl-1".into()))
        );
        assert_eq!(store.claim_key("k", "h", "bl-2", true).await.unwrap(), None);
        assert_eq!(
            store.known_key("k").await.unwrap(),
            Some(("h".into(), "bl-2".into()))
        );
    }
}
