//! A [`Store`] in memory, with DynamoDB's conditions, for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{Doc, Expect, Holder, Lease, Store, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    leases: Mutex<BTreeMap<String, Holder>>,
    notes: Mutex<BTreeMap<String, String>>,
    docs: Mutex<BTreeMap<String, Doc>>,
}

#[async_trait]
impl Store for MemoryStore {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let mut leases = self.leases.lock().unwrap();
        let epoch = match leases.get(name) {
            Some(h) if h.holder == holder => h.epoch,
            Some(h) if h.until_ms > now_ms => return Ok(None),
            Some(h) => h.epoch + 1,
            None => 1,
        };
        let until_ms = now_ms + ttl.as_millis() as u64;
        leases.insert(
            name.to_string(),
            Holder {
                holder: holder.to_string(),
                epoch,
                until_ms,
            },
        );
        Ok(Some(Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch,
            until_ms,
        }))
    }

    async fn holder(&self, name: &str) -> Result<Option<Holder>, StoreError> {
        Ok(self.leases.lock().unwrap().get(name).cloned())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut leases = self.leases.lock().unwrap();
        if let Some(h) = leases.get_mut(&lease.name)
            && h.holder == lease.holder
            && h.epoch == lease.epoch
        {
            h.until_ms = 0;
            h.holder = String::new();
        }
        Ok(())
    }

    async fn read_notes(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.notes.lock().unwrap().get(name).cloned())
    }

    async fn write_notes(&self, lease: &Lease, body: &str) -> Result<(), StoreError> {
        let leases = self.leases.lock().unwrap();
        match leases.get(&lease.name) {
            Some(h) if h.holder == lease.holder && h.epoch == lease.epoch => {
                self.notes
                    .lock()
                    .unwrap()
                    .insert(lease.name.clone(), body.to_string());
                Ok(())
            }
            _ => Err(StoreError::Fenced(lease.name.clone())),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Doc>, StoreError> {
        Ok(self.docs.lock().unwrap().get(key).cloned())
    }

    async fn put(
        &self,
        key: &str,
        body: &str,
        expect: Expect,
        fence: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        let leases = self.leases.lock().unwrap();
        if let Some(lease) = fence {
            match leases.get(&lease.name) {
                Some(h) if h.holder == lease.holder && h.epoch == lease.epoch => {}
                _ => return Err(StoreError::Fenced(lease.name.clone())),
            }
        }
        let mut docs = self.docs.lock().unwrap();
        let version = docs.get(key).map(|d| d.version);
        let holds = match expect {
            Expect::Absent => version.is_none(),
            Expect::Version(v) => version == Some(v),
            Expect::Any => true,
        };
        if holds {
            docs.insert(
                key.to_string(),
                Doc {
                    body: body.to_string(),
                    version: version.unwrap_or(0) + 1,
                },
            );
        }
        Ok(holds)
    }
}
