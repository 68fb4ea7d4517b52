//! Tab completion of names from the account (workspaces, fleets, projects, storage)
//! and of prism's own names (quotas, error codes). A TAB must be fast, so answers from
//! the account are cached for a minute under `~/.cache/prism`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap_complete::engine::CompletionCandidate;
use serde::{Deserialize, Serialize};

use crate::cloud::aws::{AwsCloud, Connection};
use crate::cloud::{Cloud, InstanceFilter, InstanceState, tags};

const FRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    /// Region and endpoint the names came from.
    key: String,
    /// (workspace, fleet, project)
    workspaces: Vec<(String, String, String)>,
    /// Names of EBS volumes and EFS file systems.
    #[serde(default)]
    storage: Vec<String>,
}

fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("prism/completion.json"))
}

fn key() -> String {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    format!(
        "{}|{}|{}",
        var("AWS_PROFILE"),
        var("AWS_REGION"),
        var("AWS_ENDPOINT_URL")
    )
}

fn cached() -> Option<Cache> {
    let path = cache_path()?;
    let age = SystemTime::now()
        .duration_since(std::fs::metadata(&path).ok()?.modified().ok()?)
        .ok()?;
    let cache: Cache = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    (age < FRESH && cache.key == key()).then_some(cache)
}

/// Reads the names from the account, at most 3 seconds; nothing on any failure.
fn fetch() -> Option<Cache> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let (workspaces, storage) = runtime.block_on(async {
        let conn = Connection::resolve(Default::default()).ok()?;
        let cloud = AwsCloud::connect(&conn).await.ok()?;
        let filter = InstanceFilter {
            tags: vec![],
            tag_keys: vec![tags::FLEET.to_string()],
            states: InstanceState::ALL
                .into_iter()
                .filter(|s| !s.is_gone())
                .collect(),
            ..Default::default()
        };
        let found = tokio::time::timeout(Duration::from_secs(3), cloud.describe_instances(&filter))
            .await
            .ok()?
            .ok()?;
        let volumes = tokio::time::timeout(Duration::from_secs(3), cloud.describe_volumes(None))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let systems = tokio::time::timeout(Duration::from_secs(3), cloud.list_file_systems())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let storage = volumes
            .iter()
            .filter_map(|v| v.tags.get("Name").cloned())
            .chain(systems.into_iter().filter_map(|f| f.name))
            .collect();
        let workspaces = found
            .iter()
            .filter_map(|i| {
                Some((
                    i.workspace()?.to_string(),
                    i.tag(tags::FLEET).unwrap_or_default().to_string(),
                    i.tag(tags::PROJECT).unwrap_or_default().to_string(),
                ))
            })
            .collect();
        Some((workspaces, storage))
    })?;
    let cache = Cache {
        key: key(),
        workspaces,
        storage,
    };
    if let Some(path) = cache_path() {
        let _ = std::fs::create_dir_all(path.parent()?);
        let _ = std::fs::write(&path, serde_json::to_vec(&cache).ok()?);
    }
    Some(cache)
}

fn names(pick: impl Fn(&(String, String, String)) -> &String) -> Vec<CompletionCandidate> {
    let cache = cached().or_else(fetch).unwrap_or_default();
    let mut out: Vec<&String> = cache
        .workspaces
        .iter()
        .map(pick)
        .filter(|n| !n.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out.into_iter().map(CompletionCandidate::new).collect()
}

/// Workspace names of every fleet.
pub fn workspaces() -> Vec<CompletionCandidate> {
    names(|w| &w.0)
}

/// Fleet names.
pub fn fleets() -> Vec<CompletionCandidate> {
    names(|w| &w.1)
}

/// Project names.
pub fn projects() -> Vec<CompletionCandidate> {
    names(|w| &w.2)
}

/// Names of EBS volumes and EFS file systems.
pub fn storage() -> Vec<CompletionCandidate> {
    let cache = cached().or_else(fetch).unwrap_or_default();
    let mut out = cache.storage;
    out.sort();
    out.dedup();
    out.into_iter().map(CompletionCandidate::new).collect()
}

/// The quota names `--quota` takes, and their codes.
pub fn quotas() -> Vec<CompletionCandidate> {
    crate::quota::all()
        .flat_map(|q| {
            [
                CompletionCandidate::new(q.friendly).help(Some(q.name.into())),
                CompletionCandidate::new(q.code).help(Some(q.name.into())),
            ]
        })
        .collect()
}

/// Every error code of the catalogue.
pub fn error_codes() -> Vec<CompletionCandidate> {
    crate::errors::CATALOGUE
        .iter()
        .flat_map(|e| e.codes.iter())
        .map(|c| CompletionCandidate::new(*c))
        .collect()
}
