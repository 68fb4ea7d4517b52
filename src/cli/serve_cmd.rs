//! `prism serve`: the bulk-launch HTTP API, on the engine the other commands use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use clap::Args;

use super::{Failure, GlobalArgs, Refusal, connect, connect_to, launch_notes};
use crate::cloud::Cloud;
use crate::config::UserConfig;
use crate::engine::Engine;
use crate::engine::launch_notes::LaunchNotes;
use crate::manifest::Manifest;
use crate::serve::error::ApiError;
use crate::serve::guard::{Door, Guard, PublicUrl};
use crate::serve::sessions::{Lifetimes, Sessions};
use crate::serve::{App, Connector, api_token, listen};
use crate::store::{LeaseKeeper, StoreUrl};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Where the API token, the launches and their events are kept [default: ~/.prism/serve].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Folder of manifests that requests may name by `manifest_path`.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Listen on an address other than loopback (plain HTTP: put TLS in front of it).
    #[arg(long)]
    pub allow_remote: bool,
    /// Replace the API token with a new one (every browser session ends too).
    #[arg(long)]
    pub rotate_token: bool,
    /// The address browsers use when it is not the listen address (a TLS reverse proxy,
    /// a DNS name): its host is accepted as Host and its origin as Origin, the sign-in
    /// link uses it, and over https the session cookie is Secure.
    #[arg(long, value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<PublicUrl>,
    /// A browser session ends after this long unused.
    #[arg(long, default_value = "12h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub session_idle: std::time::Duration,
    /// A browser session ends this long after it began, in use or not.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub session_max: std::time::Duration,
    /// Open connections at most; past it, the oldest one that has sent no request yet
    /// is closed.
    #[arg(long, default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u32).range(8..=100_000))]
    pub max_connections: u32,
    /// Log records on stderr as text, or as JSON objects with their fields (launch id,
    /// fleet, workspace, AWS request id), one per line, for log collectors
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "PRISM_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: super::logging::LogFormat,
    /// Also serve `/metrics` on this address, without a token, for a Prometheus scraper
    /// (the main address serves it behind the token); loopback unless --allow-remote
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where replicas share state: `dynamodb://TABLE` (made by `prism store init`) lets
    /// several servers behind one load balancer answer for the same launches, each
    /// account and region's launches run by one of them at a time; `files` keeps them in
    /// --state-dir [default: the settings file's `store`, else files]
    #[arg(long, env = "PRISM_STORE", value_name = "URL")]
    pub store: Option<crate::store::StoreUrl>,
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    PublicUrl::parse(text)
}

/// A manifest's `account` and `region` as written (None: the defaults).
type Spelled = (Option<String>, Option<String>);

/// One engine per account and region, made on first use from the command's AWS
/// settings and the manifest's `account` and `region`.
struct Engines {
    global: GlobalArgs,
    settings: UserConfig,
    /// By (account id, region): two accounts in one region share no limiter, launch
    /// notes or sold-out marks. An account STS cannot name is keyed by its profile.
    engines: Mutex<BTreeMap<(String, String), Arc<Engine>>>,
    /// The cloud of `--region` (or the profile's), made on first use.
    cloud: tokio::sync::OnceCell<Arc<dyn Cloud>>,
    /// Where the engines and their clouds count what they do.
    metrics: Arc<crate::metrics::Metrics>,
    /// With replicas: the table they share, and the lease of each account and region
    /// (by the manifest's `account` and `region`, None for the defaults).
    table: Option<Arc<dyn crate::store::Store>>,
    keepers: Mutex<BTreeMap<Spelled, Arc<LeaseKeeper>>>,
}

#[async_trait::async_trait]
impl Connector for Engines {
    async fn engine(&self, manifest: &Manifest) -> Result<Arc<Engine>, ApiError> {
        let cloud = connect(&self.global, manifest)
            .await
            .map_err(|f| ApiError::from_json(StatusCode::BAD_GATEWAY, f.json()))?;
        let cloud: Arc<dyn Cloud> = Arc::new(cloud.with_metrics(self.metrics.clone()));
        let account = match cloud.account().await {
            Some(a) => a.id,
            None => format!("profile:{}", manifest.account.as_deref().unwrap_or("")),
        };
        let key = (account, cloud.region().to_string());
        let rate = crate::config::launch_rate(&manifest.rate_limit, &self.settings);
        let keeper = self.keeper(manifest).await?;
        let found = self.known(&key);
        let engine = match found {
            Some(e) => e,
            None => {
                let notes = match keeper {
                    // Launches are noted under the lease: a replica that lost it
                    // cannot send one.
                    Some(k) => Arc::new(LaunchNotes::in_store(k)),
                    None => launch_notes(&self.global, cloud.as_ref()).await,
                };
                let made = Engine::new(cloud, rate, notes);
                made.set_metrics(self.metrics.clone());
                let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
                engines.entry(key).or_insert(made).clone()
            }
        };
        engine.set_launch_rate(rate);
        engine.set_sold_out_ttl(crate::config::sold_out_ttl(&self.settings));
        Ok(engine)
    }

    async fn cloud(&self) -> Result<Arc<dyn Cloud>, ApiError> {
        self.cloud
            .get_or_try_init(|| async {
                let cloud = connect_to(&self.global, None)
                    .await
                    .map_err(|f| ApiError::from_json(StatusCode::BAD_GATEWAY, f.json()))?;
                Ok(Arc::new(cloud.with_metrics(self.metrics.clone())) as Arc<dyn Cloud>)
            })
            .await
            .cloned()
    }

    async fn keeper(&self, manifest: &Manifest) -> Result<Option<Arc<LeaseKeeper>>, ApiError> {
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let spelled = (manifest.account.clone(), manifest.region.clone());
        let known = self
            .keepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&spelled)
            .cloned();
        if known.is_some() {
            return Ok(known);
        }
        let gateway = |f: Failure| ApiError::from_json(StatusCode::BAD_GATEWAY, f.json());
        let cloud = connect(&self.global, manifest).await.map_err(gateway)?;
        let account = cloud
            .account_id()
            .await
            .map_err(|e| gateway(Failure::Refused(Refusal::Unavailable, e)))?;
        let name = format!("{account}/{}", cloud.region());
        // Two manifest spellings of one account and region share its lease.
        let (keeper, new) = {
            let mut keepers = self.keepers.lock().unwrap_or_else(|e| e.into_inner());
            let found = keepers.values().find(|k| k.name == name).cloned();
            let new = found.is_none();
            let keeper = found.unwrap_or_else(|| Arc::new(LeaseKeeper::new(table.clone(), name)));
            keepers.insert(spelled, keeper.clone());
            (keeper, new)
        };
        if new {
            // Taken at once when free: the launch that met it need not wait.
            let _ = keeper.tick().await;
        }
        Ok(Some(keeper))
    }

    fn keepers(&self) -> Vec<Arc<LeaseKeeper>> {
        let keepers = self.keepers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<LeaseKeeper>> = vec![];
        for k in keepers.values() {
            if !out.iter().any(|o| Arc::ptr_eq(o, k)) {
                out.push(k.clone());
            }
        }
        out
    }
}

/// The token every replica accepts: the table's, which the first replica (or a
/// rotation) wrote; kept in this replica's state directory too.
async fn shared_token(
    table: &dyn crate::store::Store,
    state: &std::path::Path,
    mine: String,
    rotate: bool,
) -> Result<String, Failure> {
    use crate::store::Expect;
    let unreachable =
        |e: crate::store::StoreError| Failure::Refused(Refusal::Unavailable, e.to_string());
    let expect = if rotate { Expect::Any } else { Expect::Absent };
    table
        .put("api-token", &mine, expect, None)
        .await
        .map_err(unreachable)?;
    let token = table
        .get("api-token")
        .await
        .map_err(unreachable)?
        .map_or(mine.clone(), |d| d.body);
    if token != mine {
        api_token::write(state, &token)
            .map_err(|e| Failure::Refused(Refusal::Unavailable, e.to_string()))?;
    }
    Ok(token)
}

/// With replicas: takes on a token rotated on another replica (`--rotate-token`)
/// within [`TOKEN_FOLLOW`]; the old one is refused from then on.
async fn follow_token(table: Arc<dyn crate::store::Store>, guard: Arc<Guard>, state: PathBuf) {
    loop {
        tokio::time::sleep(TOKEN_FOLLOW).await;
        let Ok(Some(doc)) = table.get("api-token").await else {
            continue;
        };
        if guard.set_token(&doc.body) {
            tracing::warn!(
                "the API token was rotated on another replica: the new one is in {}",
                state.join("token").display()
            );
            if let Err(e) = api_token::write(&state, &doc.body) {
                tracing::warn!("cannot keep the new API token: {e}");
            }
        }
    }
}

/// How soon a replica takes on a token rotated on another.
const TOKEN_FOLLOW: std::time::Duration = std::time::Duration::from_secs(5);

impl Engines {
    /// The engine already made for (account, region), if any.
    fn known(&self, key: &(String, String)) -> Option<Arc<Engine>> {
        let engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        engines.get(key).cloned()
    }
}

fn default_state_dir() -> Result<PathBuf, Failure> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".prism/serve"))
        .ok_or_else(|| {
            Failure::Refused(
                Refusal::MissingFlag,
                "HOME is not set: pass --state-dir DIR".into(),
            )
        })
}

/// Takes the state dir's lock (`serve.lock`), or refuses, naming the server that
/// holds it.
fn one_server(state: &std::path::Path) -> Result<std::fs::File, Failure> {
    let path = state.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Failure::file(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(Failure::Refused(
                Refusal::InUse,
                format!(
                    "another prism serve uses the state dir {} ({}): stop it first, or give this one its own --state-dir; nothing was changed",
                    state.display(),
                    match holder.trim() {
                        "" => "starting",
                        h => h,
                    }
                ),
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Failure::Io(e)),
    }
}

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> Result<ExitCode, Failure> {
    if !crate::serve::is_loopback(&args.listen) {
        if !args.allow_remote {
            return Err(Failure::Refused(
                Refusal::Unsafe,
                format!(
                    "refusing to listen on {}, which is not a loopback address: pass --allow-remote to serve other machines (over plain HTTP the token can be read on the way; put a TLS reverse proxy in front)",
                    args.listen
                ),
            ));
        }
        super::logging::tell(
            true,
            &format!(
                "warning: listening on {} over plain HTTP: anyone on the network path can read the API token; put a TLS reverse proxy in front",
                args.listen
            ),
        );
    }
    if let Some(addr) = &args.metrics_listen
        && let Some(why) = crate::serve::metrics::refusal(addr, args.allow_remote)
    {
        return Err(Failure::Refused(Refusal::Unsafe, why));
    }
    let settings = crate::config::load()?;
    let manifests = match &args.manifests {
        Some(dir) => Some(dir.canonicalize().map_err(|e| {
            Failure::Refused(
                Refusal::InvalidValue,
                format!("--manifests {}: {e}", dir.display()),
            )
        })?),
        None => None,
    };
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir()?,
    };
    let state = api_token::state_dir(&dir)
        .map_err(|e| Failure::Refused(Refusal::Unavailable, e.to_string()))?;
    // One server per state dir, held until the process ends; a token rotation from
    // another process is refused while a server runs.
    let mut lock = one_server(&state)?;
    let api_token = api_token::load_or_create(&state, args.rotate_token)
        .map_err(|e| Failure::Refused(Refusal::Unavailable, e.to_string()))?;
    let store = crate::config::store(args.store.as_ref(), &settings);
    let table: Option<Arc<dyn crate::store::Store>> = match &store {
        StoreUrl::Files => None,
        StoreUrl::DynamoDb { table } => {
            let aws = connect_to(global, None).await?;
            let unreachable = |e: crate::store::StoreError| {
                Failure::Refused(Refusal::Unavailable, format!("{store}: {e}"))
            };
            Some(Arc::new(
                crate::store::dynamo::DynamoStore::new(aws.sdk_config(), table)
                    .map_err(unreachable)?,
            ))
        }
    };
    let api_token = match &table {
        Some(t) => shared_token(t.as_ref(), &state, api_token, args.rotate_token).await?,
        None => api_token,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Failure::Refused(
                Refusal::Unavailable,
                format!("cannot listen on {}: {e}", args.listen),
            )
        })?;
    let addr = listener.local_addr().map_err(Failure::Io)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let scrape = match args.metrics_listen {
        Some(at) => Some(super::metrics_listener(at).await?),
        None => None,
    };
    {
        use std::io::{Seek, Write};
        lock.set_len(0).map_err(Failure::Io)?;
        lock.rewind().map_err(Failure::Io)?;
        writeln!(lock, "pid {} at http://{addr}", std::process::id()).map_err(Failure::Io)?;
    }
    let door = Door {
        listen: addr,
        remote: args.allow_remote,
        public: args.public_url.clone(),
    };
    if args.session_idle.is_zero() || args.session_max < args.session_idle {
        return Err(Failure::Refused(
            Refusal::InvalidValue,
            format!(
                "--session-idle {} must be more than zero and at most --session-max {}",
                humantime::format_duration(args.session_idle),
                humantime::format_duration(args.session_max)
            ),
        ));
    }
    let lifetimes = Lifetimes {
        idle: args.session_idle,
        absolute: args.session_max,
    };
    let sessions = match &table {
        Some(t) => Sessions::shared(t.clone(), lifetimes, args.rotate_token),
        None => Sessions::load(&state, lifetimes, args.rotate_token),
    };
    let guard = Guard::new(api_token, door, sessions);
    let connector = Arc::new(Engines {
        global: GlobalArgs {
            region: global.region.clone(),
            profile: global.profile.clone(),
            endpoint_url: global.endpoint_url.clone(),
            verbose: global.verbose,
            quiet: global.quiet,
        },
        settings,
        engines: Mutex::new(BTreeMap::new()),
        cloud: tokio::sync::OnceCell::new(),
        metrics: metrics.clone(),
        table: table.clone(),
        keepers: Mutex::new(BTreeMap::new()),
    });
    let app = App::load(&state, manifests, connector, metrics.clone(), table.clone());
    if let Some(t) = &table {
        tokio::spawn(app.clone().replicate());
        tokio::spawn(follow_token(t.clone(), guard.clone(), state.clone()));
    }
    let shown = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    let code = guard.new_login_code();
    super::print(&format!(
        "prism serve: listening on http://{shown}\nprism serve: sign in: {}/login?code={code} (the link works once)\nprism serve: the API token is in {}\n",
        guard.door.base_url(),
        state.join("token").display()
    ))?;
    if let Some(l) = scrape {
        let shown = l.local_addr().map_err(Failure::Io)?;
        super::print(&format!("prism serve: metrics on http://{shown}/metrics\n"))?;
        tokio::spawn(crate::serve::metrics::run(
            l,
            metrics.clone(),
            std::future::pending(),
        ));
    }
    let limits = listen::Limits {
        max_connections: args.max_connections as usize,
        ..listen::Limits::default()
    };
    crate::serve::run(listener, app, guard, limits, super::stop_signal())
        .await
        .map_err(Failure::Io)?;
    super::logging::tell(false, "prism serve: stopped");
    Ok(ExitCode::SUCCESS)
}
