//! The [`Store`] on a DynamoDB table: one string key `pk`; leases are `lease#NAME`
//! items, launch notes `notes#NAME` items. Every change is a conditional write, so two
//! replicas that race read the same item and only one write lands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};

use super::{Doc, Expect, Holder, Lease, Store, StoreError};

/// The attribute DynamoDB's TTL removes items by (seconds since the Unix epoch), for
/// records that end.
pub const TTL_ATTRIBUTE: &str = "expires";

/// The table, called on a runtime of its own: the launch notes are read and written
/// from synchronous code that holds locks (as the notes file is), which must not wait
/// on the runtime it blocks.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    table: Table,
    runtime: Arc<OwnRuntime>,
}

#[derive(Debug, Clone)]
struct Table {
    client: Client,
    table: String,
}

/// A runtime of one thread, shut down without waiting when dropped (from async code).
#[derive(Debug)]
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> StoreError {
    StoreError::Unavailable(format!("DynamoDB: {}", DisplayErrorContext(&e)))
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> u64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

impl DynamoStore {
    /// The table `table`, reached with `config` (region, credentials, endpoint).
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prism-store")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the store's thread: {e}"))
            })?;
        Ok(DynamoStore {
            table: Table {
                client: Client::new(config),
                table: table.to_string(),
            },
            runtime: Arc::new(OwnRuntime(Some(runtime))),
        })
    }

    /// Runs `call` on the table, on the store's own runtime.
    async fn on_own<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Table) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(rt) = &self.runtime.0 else {
            return Err(StoreError::Unavailable(
                "the store's thread is stopped".into(),
            ));
        };
        rt.spawn(call(self.table.clone()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the store's call stopped: {e}")))?
    }

    /// Creates the table (on-demand, key `pk`) and turns on its TTL, unless done
    /// already. Returns whether it created the table.
    pub async fn init(&self) -> Result<bool, StoreError> {
        self.on_own(|t| async move { t.init().await }).await
    }
}

impl Table {
    async fn init(&self) -> Result<bool, StoreError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            )
            .send()
            .await;
        let created = match created {
            Ok(_) => true,
            Err(e) if e.code() == Some("ResourceInUseException") => false,
            Err(e) => return Err(unavailable(e)),
        };
        // A table made by hand must have prism's key.
        let table = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        let keys: Vec<(String, String)> = table
            .table()
            .map(|t| t.key_schema())
            .unwrap_or_default()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                )
            })
            .collect();
        if keys != [("pk".to_string(), "HASH".to_string())] {
            return Err(StoreError::Unavailable(format!(
                "the table {} has the key {keys:?}; prism needs a table whose only key is the string `pk`: name another table",
                self.table
            )));
        }
        for _ in 0..60 {
            let status = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(unavailable)?
                .table()
                .and_then(|t| t.table_status().cloned());
            if status.as_ref().map(|s| s.as_str()) == Some("ACTIVE") {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            )
            .send()
            .await;
        match ttl {
            Ok(_) => {}
            // Already on.
            Err(e) if e.code() == Some("ValidationException") => {}
            Err(e) => return Err(unavailable(e)),
        }
        Ok(created)
    }

    async fn item(&self, pk: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(got.item)
    }
}

fn lease_key(name: &str) -> String {
    format!("lease#{name}")
}

fn notes_key(name: &str) -> String {
    format!("notes#{name}")
}

impl Table {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let key = lease_key(name);
        let current = self.item(&key).await?;
        let until_ms = now_ms + ttl.as_millis() as u64;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&key))
            .item("holder", s(holder))
            .item("until_ms", n(until_ms));
        let (put, epoch) = match &current {
            None => (put.condition_expression("attribute_not_exists(pk)"), 1),
            Some(item) => {
                let (was, epoch, was_until) = (
                    get_s(item, "holder"),
                    get_n(item, "epoch"),
                    get_n(item, "until_ms"),
                );
                let epoch = if was == holder {
                    epoch
                } else if was_until > now_ms {
                    return Ok(None);
                } else {
                    epoch + 1
                };
                // Only over the item as read: a replica that wrote since wins.
                (
                    put.condition_expression("holder = :h AND epoch = :e AND until_ms = :u")
                        .expression_attribute_values(":h", s(&was))
                        .expression_attribute_values(":e", n(get_n(item, "epoch")))
                        .expression_attribute_values(":u", n(was_until)),
                    epoch,
                )
            }
        };
        match put.item("epoch", n(epoch)).send().await {
            Ok(_) => Ok(Some(Lease {
                name: name.to_string(),
                holder: holder.to_string(),
                epoch,
                until_ms,
            })),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn holder(&self, name: &str) -> Result<Option<Holder>, StoreError> {
        Ok(self.item(&lease_key(name)).await?.map(|item| Holder {
            holder: get_s(&item, "holder"),
            epoch: get_n(&item, "epoch"),
            until_ms: get_n(&item, "until_ms"),
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let done = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&lease_key(&lease.name)))
            .update_expression("SET until_ms = :zero")
            .condition_expression("holder = :h AND epoch = :e")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":h", s(&lease.holder))
            .expression_attribute_values(":e", n(lease.epoch))
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read_notes(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .item(&notes_key(name))
            .await?
            .map(|item| get_s(&item, "body")))
    }

    /// The check, in a transaction, that `lease` is still held at its epoch.
    fn fence(&self, lease: &Lease) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(&lease_key(&lease.name)))
            .condition_expression("holder = :h AND epoch = :e")
            .expression_attribute_values(":h", s(&lease.holder))
            .expression_attribute_values(":e", n(lease.epoch))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    async fn get(&self, key: &str) -> Result<Option<Doc>, StoreError> {
        Ok(self.item(key).await?.map(|item| Doc {
            body: get_s(&item, "body"),
            version: get_n(&item, "ver"),
        }))
    }

    async fn put(
        &self,
        key: &str,
        body: &str,
        expect: Expect,
        fence: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        let condition = match expect {
            Expect::Absent => Some("attribute_not_exists(pk)"),
            Expect::Version(_) => Some("ver = :v"),
            Expect::Any => None,
        };
        let mut values = HashMap::from([(":b".to_string(), s(body)), (":one".into(), n(1))]);
        if let Expect::Version(v) = expect {
            values.insert(":v".into(), n(v));
        }
        let Some(lease) = fence else {
            let done = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(key))
                .update_expression("SET body = :b ADD ver :one")
                .set_condition_expression(condition.map(str::to_string))
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            return match done {
                Ok(_) => Ok(true),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
                Err(e) => Err(unavailable(e)),
            };
        };
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("SET body = :b ADD ver :one")
            .set_condition_expression(condition.map(str::to_string))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.fenced(lease, TransactWriteItem::builder().update(update).build())
            .await
    }

    /// Writes `item` only while `lease` is held at its epoch ([`StoreError::Fenced`]
    /// otherwise); false when `item`'s own condition did not hold.
    async fn fenced(&self, lease: &Lease, item: TransactWriteItem) -> Result<bool, StoreError> {
        let written = self
            .client
            .transact_write_items()
            .transact_items(self.fence(lease)?)
            .transact_items(item)
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if e.err().code() == Some("TransactionCanceledException") =>
            {
                // Which condition failed: the lease's (first) or the item's (second).
                let reasons = match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        c.cancellation_reasons().to_vec()
                    }
                    _ => vec![],
                };
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .and_then(|r| r.code())
                        .is_some_and(|c| c == "ConditionalCheckFailed")
                };
                if failed(1) && !failed(0) {
                    Ok(false)
                } else {
                    Err(StoreError::Fenced(lease.name.clone()))
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn write_notes(&self, lease: &Lease, body: &str) -> Result<(), StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(&notes_key(&lease.name)))
            .item("body", s(body))
            .item("epoch", n(lease.epoch))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.fenced(lease, TransactWriteItem::builder().put(put).build())
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.on_own(move |t| async move { t.acquire(&name, &holder, ttl, now_ms).await })
            .await
    }

    async fn holder(&self, name: &str) -> Result<Option<Holder>, StoreError> {
        let name = name.to_string();
        self.on_own(move |t| async move { t.holder(&name).await })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.on_own(move |t| async move { t.release(&lease).await })
            .await
    }

    async fn read_notes(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_string();
        self.on_own(move |t| async move { t.read_notes(&name).await })
            .await
    }

    async fn write_notes(&self, lease: &Lease, body: &str) -> Result<(), StoreError> {
        let (lease, body) = (lease.clone(), body.to_string());
        self.on_own(move |t| async move { t.write_notes(&lease, &body).await })
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Doc>, StoreError> {
        let key = key.to_string();
        self.on_own(move |t| async move { t.get(&key).await }).await
    }

    async fn put(
        &self,
        key: &str,
        body: &str,
        expect: Expect,
        fence: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        let (key, body, fence) = (key.to_string(), body.to_string(), fence.cloned());
        self.on_own(move |t| async move { t.put(&key, &body, expect, fence.as_ref()).await })
            .await
    }
}

/// The IAM policy replicas need on `table` in `region` of `account`.
pub fn iam_policy(table: &str, region: &str, account: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PrismStore",
            "Effect": "Allow",
            "Action": [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:Query",
                "dynamodb:ConditionCheckItem",
                "dynamodb:DescribeTable"
            ],
            "Resource": format!("arn:aws:dynamodb:{region}:{account}:table/{table}")
        }]
    }))
    .unwrap_or_default()
}
