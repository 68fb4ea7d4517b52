//! Where replicas share what one machine keeps in files: leases and launch notes.
//!
//! One machine needs nothing here: launch notes stay in a file, and one `watch` per
//! manifest reconciles alone. Replicas on several machines (`--store dynamodb://TABLE`)
//! share one DynamoDB table:
//!
//! - **A lease per (account, region)**, the unit that shares AWS's buckets and quotas,
//!   held by one replica at a time for [`LEASE_TTL`] and renewed well within it. Each
//!   new holder gets an epoch one greater than the last ([`Lease::epoch`]).
//! - **The launch notes of that (account, region)**, written only by the lease holder
//!   and only while its epoch is the lease's (a conditional write): a holder that was
//!   paused past its lease and wakes can no longer note a launch, so it can no longer
//!   send one ([`crate::engine::launch_notes`]). The next holder reads the notes first,
//!   and sends the launches noted there with their own tokens.
//!
//! Clocks: a lease ends at its holder's wall clock plus the TTL; replicas' clocks must
//! agree to well within the TTL (NTP does).

pub mod dynamo;
#[cfg(test)]
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// How long a lease holds without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a holder renews its lease, and a standby replica tries to take it.
pub const LEASE_RENEW: Duration = Duration::from_secs(3);

/// A lease as its holder took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What it is for: `ACCOUNT/REGION`.
    pub name: String,
    pub holder: String,
    /// Grows by one at each new holder; writes are conditional on it.
    pub epoch: u64,
    /// When it ends unless renewed, in milliseconds since the Unix epoch.
    pub until_ms: u64,
}

/// Who holds a lease now, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub epoch: u64,
    pub until_ms: u64,
}

/// What the store refused or could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write was conditional on a lease this process no longer holds.
    #[error("the lease {0} is held by another replica now")]
    Fenced(String),
    /// The store could not be reached or refused the call.
    #[error("{0}")]
    Unavailable(String),
}

/// Leases and the launch notes of each (account, region).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Takes the lease `name` for `holder` when it is free, has run out, or is
    /// `holder`'s already (a renewal, same epoch), for `ttl` from `now_ms`. None when
    /// another holder has it.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Who holds `name`, if anyone ever did.
    async fn holder(&self, name: &str) -> Result<Option<Holder>, StoreError>;

    /// Gives `lease` up at once, when it is still held as taken.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The notes document of lease `name` (JSON), if written.
    async fn read_notes(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Writes the notes document of `lease`, only while `lease` is held at its epoch:
    /// [`StoreError::Fenced`] otherwise.
    async fn write_notes(&self, lease: &Lease, body: &str) -> Result<(), StoreError>;

    /// The document kept under `key`, with its version.
    async fn get(&self, key: &str) -> Result<Option<Doc>, StoreError>;

    /// Writes `body` under `key` when `expect` holds of the item as it stands (then its
    /// version grows by one), and, with `fence`, only while that lease is held at its
    /// epoch ([`StoreError::Fenced`] otherwise). False when `expect` did not hold.
    async fn put(
        &self,
        key: &str,
        body: &str,
        expect: Expect,
        fence: Option<&Lease>,
    ) -> Result<bool, StoreError>;
}

/// A document the store keeps under a key: serve's launch records, their events,
/// idempotency keys, sessions and quota-request notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub body: String,
    /// 1 for the first write, one more for each write since.
    pub version: u64,
}

/// What a [`Store::put`] expects of the item it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// That there is none yet: of two replicas writing the same new key, one lands.
    Absent,
    /// That it is at this version still (read, changed, written back).
    Version(u64),
    /// Nothing.
    Any,
}

/// Reads `key`, changes it with `change` (None: leave it) and writes it back at the
/// version read, again from a fresh read when another writer came between. Returns the
/// document as written or found.
pub async fn update<T, F>(store: &dyn Store, key: &str, mut change: F) -> Result<T, StoreError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
    F: FnMut(&mut T) -> bool,
{
    loop {
        let doc = store.get(key).await?;
        let mut value: T = doc
            .as_ref()
            .and_then(|d| serde_json::from_str(&d.body).ok())
            .unwrap_or_default();
        if !change(&mut value) {
            return Ok(value);
        }
        let body = serde_json::to_string(&value).expect("serializes");
        let expect = doc.map_or(Expect::Absent, |d| Expect::Version(d.version));
        if store.put(key, &body, expect, None).await? {
            return Ok(value);
        }
    }
}

/// A small document of the shared table kept in memory too (serve's sessions and
/// quota-request notes), read again when older than asked, changed with
/// [`update`]. Called from synchronous code: the store answers on its own thread.
#[derive(Debug)]
pub struct SharedDoc<T> {
    table: Arc<dyn Store>,
    key: String,
    cached: std::sync::Mutex<(Option<std::time::Instant>, T)>,
}

impl<T> SharedDoc<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone,
{
    pub fn new(table: Arc<dyn Store>, key: &str) -> Self {
        SharedDoc {
            table,
            key: key.to_string(),
            cached: std::sync::Mutex::new((None, T::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<std::time::Instant>, T)> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The document, read again when the copy here is older than `max_age`. When the
    /// table cannot be reached, the copy here.
    pub fn read(&self, max_age: Duration) -> T {
        let (at, value) = self.lock().clone();
        if at.is_some_and(|at| at.elapsed() < max_age) {
            return value;
        }
        match futures::executor::block_on(self.table.get(&self.key)) {
            Ok(doc) => {
                let value: T = doc
                    .and_then(|d| serde_json::from_str(&d.body).ok())
                    .unwrap_or_default();
                *self.lock() = (Some(std::time::Instant::now()), value.clone());
                value
            }
            Err(e) => {
                tracing::warn!("cannot read {} from the shared store: {e}", self.key);
                value
            }
        }
    }

    /// Changes the document with `change` (false: leave it) as the table holds it now;
    /// the document as it stands after.
    pub fn change(&self, change: impl FnMut(&mut T) -> bool) -> Result<T, StoreError> {
        let value = futures::executor::block_on(update(self.table.as_ref(), &self.key, change))?;
        *self.lock() = (Some(std::time::Instant::now()), value.clone());
        Ok(value)
    }
}

/// Where state is kept, as named by `--store`, `PRISM_STORE` or the settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// Local files, this machine only (the default).
    Files,
    /// A DynamoDB table, shared by replicas.
    DynamoDb { table: String },
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "files" {
            return Ok(StoreUrl::Files);
        }
        let Some(table) = s.strip_prefix("dynamodb://") else {
            return Err(format!(
                "`{s}` is not a store: use `dynamodb://TABLE`, or `files` for this machine's files"
            ));
        };
        // DynamoDB's rule for table names.
        let valid = (3..=255).contains(&table.len())
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !valid {
            return Err(format!(
                "`{table}` is not a DynamoDB table name: 3 to 255 letters, digits, `_`, `-` or `.`"
            ));
        }
        Ok(StoreUrl::DynamoDb {
            table: table.to_string(),
        })
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Files => f.write_str("files"),
            StoreUrl::DynamoDb { table } => write!(f, "dynamodb://{table}"),
        }
    }
}

/// This process as a lease holder: host, process id and a random part, so that a
/// restarted process on the same host is a new holder.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}

/// A lease this process holds or waits for, kept current by [`LeaseKeeper::tick`]: what
/// the launch notes condition their writes on.
#[derive(Debug)]
pub struct LeaseKeeper {
    pub store: Arc<dyn Store>,
    pub name: String,
    pub holder: String,
    held: std::sync::Mutex<Option<Lease>>,
    /// Writers of the notes in this process take turns.
    pub(crate) writing: std::sync::Mutex<()>,
}

/// What one [`LeaseKeeper::tick`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This process holds the lease; `taken` when it just took it from no one or
    /// from a holder that stopped renewing.
    Holding { epoch: u64, taken: bool },
    /// Another replica holds it.
    Standby { holder: String, until_ms: u64 },
}

impl Standing {
    /// How long until the next [`LeaseKeeper::tick`]: a holder renews every
    /// [`LEASE_RENEW`]; a standby replica tries again the moment the holder's lease
    /// runs out, so a takeover comes within the TTL of the holder's last renewal.
    pub fn next_tick(&self) -> Duration {
        match self {
            Standing::Holding { .. } => LEASE_RENEW,
            Standing::Standby { until_ms, .. } => {
                let left = until_ms.saturating_sub(crate::engine::launch_notes::now_ms());
                Duration::from_millis(left + 50).min(LEASE_RENEW)
            }
        }
    }
}

/// Takes or renews `keeper`'s lease once; logs when whose it is changed since `last`
/// (`work`: what the holder does, e.g. "it reconciles and launches"), and sets the
/// `prism_lease_held` gauge. How long until the next try.
pub async fn keep_once(
    keeper: &LeaseKeeper,
    last: &mut Option<Standing>,
    metrics: Option<&crate::metrics::Metrics>,
    work: &str,
) -> Duration {
    let standing = keeper.tick().await;
    if let Some(m) = metrics {
        m.lease_held(&keeper.name, keeper.lease().is_some());
    }
    let now = match standing {
        Ok(now) => now,
        Err(e) => {
            if keeper.lease().is_none() {
                *last = None;
            }
            tracing::warn!(lease = %keeper.name, "could not reach the store to renew the lease: {e}; trying again in {}", humantime::format_duration(LEASE_RENEW));
            return LEASE_RENEW;
        }
    };
    let news = match (&now, last.as_ref()) {
        (Standing::Holding { taken, .. }, _) => *taken,
        (Standing::Standby { holder, .. }, Some(Standing::Standby { holder: was, .. })) => {
            holder != was
        }
        (Standing::Standby { .. }, _) => true,
    };
    if news {
        match &now {
            Standing::Holding { epoch, .. } => tracing::info!(
                lease = %keeper.name,
                epoch,
                "this replica ({}) holds the lease of {}: {work}",
                keeper.holder,
                keeper.name
            ),
            Standing::Standby { holder, .. } => tracing::info!(
                lease = %keeper.name,
                "standing by: {holder} holds the lease of {}; this replica takes over within {} if it stops renewing it",
                keeper.name,
                humantime::format_duration(LEASE_TTL)
            ),
        }
    }
    let next = now.next_tick();
    *last = Some(now);
    next
}

impl LeaseKeeper {
    pub fn new(store: Arc<dyn Store>, name: String) -> Self {
        LeaseKeeper {
            store,
            name,
            holder: holder_id(),
            held: std::sync::Mutex::new(None),
            writing: std::sync::Mutex::new(()),
        }
    }

    /// The lease as last taken or renewed, if this process holds it.
    pub fn lease(&self) -> Option<Lease> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the lease: it was lost (a fenced write found another holder).
    pub fn lost(&self) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Takes or renews the lease; says who holds it. When the store cannot be reached,
    /// a lease past its end is given up here (another replica may have taken it).
    pub async fn tick(&self) -> Result<Standing, StoreError> {
        let now = crate::engine::launch_notes::now_ms();
        let before = self.lease();
        let acquired = self
            .store
            .acquire(&self.name, &self.holder, LEASE_TTL, now)
            .await;
        let acquired = match acquired {
            Ok(a) => a,
            Err(e) => {
                // Not renewed past its end, the lease is another replica's to take.
                if before.is_some_and(|l| l.until_ms <= now) {
                    self.lost();
                }
                return Err(e);
            }
        };
        match acquired {
            Some(lease) => {
                let taken = before.as_ref().is_none_or(|b| b.epoch != lease.epoch);
                let epoch = lease.epoch;
                *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
                Ok(Standing::Holding { epoch, taken })
            }
            None => {
                self.lost();
                let h = self.store.holder(&self.name).await?;
                Ok(Standing::Standby {
                    holder: h.as_ref().map(|h| h.holder.clone()).unwrap_or_default(),
                    until_ms: h.map_or(now, |h| h.until_ms),
                })
            }
        }
    }

    /// Gives the lease up, if held (a clean stop: the next replica need not wait for
    /// it to run out).
    pub async fn release(&self) {
        if let Some(lease) = self.lease() {
            self.lost();
            if let Err(e) = self.store.release(&lease).await {
                tracing::warn!("could not give up the lease {}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_table_or_files() {
        assert_eq!(
            "dynamodb://prism-state".parse::<StoreUrl>(),
            Ok(StoreUrl::DynamoDb {
                table: "prism-state".into()
            })
        );
        assert_eq!("files".parse::<StoreUrl>(), Ok(StoreUrl::Files));
        let e = "s3://bucket".parse::<StoreUrl>().unwrap_err();
        assert!(e.contains("dynamodb://TABLE"), "{e}");
        let e = "dynamodb://a b".parse::<StoreUrl>().unwrap_err();
        assert!(e.contains("not a DynamoDB table name"), "{e}");
        assert_eq!(
            StoreUrl::DynamoDb {
                table: "t-1".into()
            }
            .to_string(),
            "dynamodb://t-1"
        );
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_new_epoch_for_each() {
        let store: Arc<dyn Store> = Arc::new(memory::MemoryStore::default());
        let a = LeaseKeeper::new(store.clone(), "123/us-west-2".into());
        let b = LeaseKeeper::new(store.clone(), "123/us-west-2".into());
        assert_eq!(
            a.tick().await.unwrap(),
            Standing::Holding {
                epoch: 1,
                taken: true
            }
        );
        assert!(
            matches!(b.tick().await.unwrap(), Standing::Standby { holder, .. } if holder == a.holder)
        );
        // Renewed: the same epoch.
        assert_eq!(
            a.tick().await.unwrap(),
            Standing::Holding {
                epoch: 1,
                taken: false
            }
        );
        let old = a.lease().unwrap();
        store.write_notes(&old, "{}").await.unwrap();
        // A runs out (never renewed): B takes it with the next epoch, and A's writes
        // are refused from then on.
        let later = old.until_ms + 1;
        let taken = store
            .acquire(&b.name, &b.holder, LEASE_TTL, later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.epoch, 2);
        assert!(matches!(
            store.write_notes(&old, "{\"a\":1}").await,
            Err(StoreError::Fenced(_))
        ));
        store.write_notes(&taken, "{\"b\":1}").await.unwrap();
        assert_eq!(
            store.read_notes(&b.name).await.unwrap().as_deref(),
            Some("{\"b\":1}")
        );
        // Given up, it is free at once: the next holder gets epoch 3.
        store.release(&taken).await.unwrap();
        let again = store
            .acquire(&a.name, &a.holder, LEASE_TTL, later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.epoch, 3);
    }

    #[tokio::test]
    async fn documents_are_written_only_as_expected_and_under_the_lease() {
        let store = memory::MemoryStore::default();
        assert!(store.put("k", "1", Expect::Absent, None).await.unwrap());
        assert!(!store.put("k", "2", Expect::Absent, None).await.unwrap());
        let doc = store.get("k").await.unwrap().unwrap();
        assert_eq!((doc.body.as_str(), doc.version), ("1", 1));
        assert!(!store.put("k", "2", Expect::Version(7), None).await.unwrap());
        assert!(store.put("k", "2", Expect::Version(1), None).await.unwrap());
        assert!(store.put("k", "3", Expect::Any, None).await.unwrap());
        assert_eq!(store.get("k").await.unwrap().unwrap().version, 3);
        let lease = store
            .acquire("a/r", "me", LEASE_TTL, 1_000)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .put("f", "x", Expect::Absent, Some(&lease))
                .await
                .unwrap()
        );
        // Another holder after the lease ran out: the old one's writes are refused.
        store
            .acquire("a/r", "other", LEASE_TTL, lease.until_ms + 1)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            store.put("g", "y", Expect::Absent, Some(&lease)).await,
            Err(StoreError::Fenced(_))
        ));
        assert!(store.get("g").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_writers_of_one_document_both_land() {
        let store: Arc<dyn Store> = Arc::new(memory::MemoryStore::default());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    update(store.as_ref(), "set", |v: &mut Vec<u32>| {
                        v.push(i);
                        true
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let a = SharedDoc::<Vec<u32>>::new(store.clone(), "set");
        let mut all = a.read(Duration::ZERO);
        all.sort();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        // A change through one copy is seen by another once its copy is old enough.
        let b = SharedDoc::<Vec<u32>>::new(store, "set");
        assert_eq!(b.read(Duration::from_secs(60)).len(), 8);
        a.change(|v| {
            v.clear();
            true
        })
        .unwrap();
        assert_eq!(
            b.read(Duration::from_secs(60)).len(),
            8,
            "a fresh copy is kept"
        );
        assert_eq!(b.read(Duration::ZERO).len(), 0);
    }
}
