//! `mgmt`: the command-line front end. Parses flags, compiles the graph (all
//! input is validated before anything touches the machine), then hands it to
//! the driver in `mgmt-io`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Prints an error for the user on stderr, ignoring a closed stderr
/// (`eprintln!` would panic); a JSON object under `--log-format json`.
macro_rules! report {
    ($($arg:tt)*) => {{
        crate::logging::report(&format!($($arg)*));
    }};
}

#[cfg(not(feature = "system-allocator"))]
mod allocator;
mod args;
mod exports;
mod fleet;
mod logging;
mod metrics;
mod report;
mod sd_notify;
mod tls;

use args::{Cli, Command, GraphArgs, RestoreArgs, RunArgs};
use clap::{CommandFactory, Parser};
use mgmt_core::Graph;
use mgmt_core::facts::Facts;
use tracing::{error, info, warn};

/// Exit status when the input (flags or graph) is invalid.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit status when some resource failed for good.
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let code = match cli.command {
        Command::Graph(args) => match graph_facts(&args)
            .and_then(|facts| load(&args.file, args.max_graph_bytes, &LaterFacts::ready(facts)))
        {
            Ok((_, graph, _)) => {
                use std::io::Write as _;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                // A reader that stopped early (`| head`) is not an error of ours.
                let _ = graph
                    .write_json(&mut out)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
                    .and_then(|()| out.flush());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => run(*args),
        Command::Deploy(args) => fleet::deploy(*args),
        Command::Status(args) => fleet::status(args),
        Command::Restore(args) => restore(args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mgmt", &mut out);
            print_stdout(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => print_stdout(&out),
                Err(e) => {
                    error!("cannot render the man page: {e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Command::Tls(cmd) => match tls::command(cmd) {
            Ok(done) => {
                info!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
    };
    exit(code, &[EXIT_FAILED, EXIT_BAD_INPUT])
}

/// Ends the process once everything of ours is written and dropped, without
/// the allocator's exit-time sweep: mimalloc, linked statically, hands every
/// page it holds back to the kernel at exit (`mi_process_done`), dozens
/// of madvise calls at the end of each one-shot run for memory the kernel
/// takes back anyway. `codes` are the process's exit codes besides
/// success; any other is returned to Rust's runtime, which exits as usual.
fn exit(code: ExitCode, codes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let status = if code == ExitCode::SUCCESS {
        Some(0)
    } else {
        codes
            .iter()
            .find(|&&c| code == ExitCode::from(c))
            .map(|&c| i32::from(c))
    };
    let Some(status) = status else {
        return code;
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process; nothing of ours runs after it.
    unsafe { libc::_exit(status) }
}

/// The facts `mgmt graph` renders with: this machine's (named
/// `--hostname`), or what that host published.
fn graph_facts(args: &GraphArgs) -> Result<Facts, ExitCode> {
    let name = args.hostname.clone().unwrap_or_else(machine_hostname);
    if !args.from_cluster {
        return Ok(mgmt_io::facts::gather(&name));
    }
    fleet::published_facts(&args.client, &name)
}

/// This host's facts, gathered on a thread of their own while the graph is
/// read and compiled: only a template needs them before it compiles (about
/// 0.5 ms: /etc/os-release, /proc/meminfo, the addresses over netlink).
struct LaterFacts {
    gathering: std::sync::Mutex<Option<std::sync::mpsc::Receiver<Facts>>>,
    hostname: String,
    facts: std::sync::OnceLock<Facts>,
}

impl LaterFacts {
    /// Starts gathering them on one of `runtime`'s blocking threads.
    fn gather_on(runtime: &tokio::runtime::Runtime, hostname: &str) -> LaterFacts {
        let (tx, rx) = std::sync::mpsc::channel();
        let name = hostname.to_string();
        // A receiver gone (the run ended first) wants nothing.
        runtime.spawn_blocking(move || {
            let _ = tx.send(mgmt_io::facts::gather(&name));
        });
        LaterFacts {
            gathering: std::sync::Mutex::new(Some(rx)),
            hostname: hostname.to_string(),
            facts: std::sync::OnceLock::new(),
        }
    }

    fn ready(facts: Facts) -> LaterFacts {
        LaterFacts {
            gathering: std::sync::Mutex::new(None),
            hostname: facts.name.clone(),
            facts: std::sync::OnceLock::from(facts),
        }
    }

    /// The facts, once gathered (here, if their thread could not).
    fn get(&self) -> &Facts {
        self.facts.get_or_init(|| {
            let gathering = self
                .gathering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            gathering
                .and_then(|rx| rx.recv().ok())
                .unwrap_or_else(|| mgmt_io::facts::gather(&self.hostname))
        })
    }
}

/// Reads and compiles a graph, printing every diagnostic on failure.
fn load(
    path: &Path,
    max_bytes: u64,
    facts: &LaterFacts,
) -> Result<(String, Graph, PackageFacts), ExitCode> {
    let text = read_graph(path, max_bytes).map_err(|e| {
        report!("error: {}: {e}", path.display());
        ExitCode::from(EXIT_BAD_INPUT)
    })?;
    let mut known = None;
    let name = path.display().to_string();
    let graph = compile_text(&name, &text, facts, &[], &mut known).map_err(|e| {
        report!("{e}");
        ExitCode::from(EXIT_BAD_INPUT)
    })?;
    Ok((text, graph, known))
}

/// Compiles a graph's text; the diagnostics on failure. A graph with
/// packages is compiled again once the package manager said what they ship
/// (package AutoEdges); the core only ever sees that as an input. Blocking,
/// and never on an async runtime's thread (it may start one of its own).
/// What the package manager said the graph's packages ship, for the
/// packages it was asked about: a reload with the same packages asks again
/// for nothing (it may take a PackageKit transaction and a download).
type PackageFacts = Option<(Vec<String>, mgmt_core::autoedge::PackageFiles)>;

fn compile_text(
    name: &str,
    text: &str,
    facts: &LaterFacts,
    exports: &[mgmt_core::export::Exported],
    known: &mut PackageFacts,
) -> Result<Graph, String> {
    // Only a template waits for the facts.
    let rendered;
    let text = if mgmt_core::template::is_template(text) {
        rendered =
            mgmt_core::template::render(name, text, facts.get()).map_err(|e| e.to_string())?;
        &*rendered
    } else {
        text
    };
    let first = mgmt_core::compile(name, text).map_err(|e| e.to_string())?;
    let collected = exports::collected(&first, exports);
    let packages = mgmt_core::compile::packages(&first);
    let mut package_files = Default::default();
    if let Some((names, files)) = known.as_ref()
        && *names == packages
    {
        package_files = files.clone();
    } else if !packages.is_empty() {
        let facts = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(mgmt_io::pkg::package_files(&packages)));
        match facts {
            Ok((files, notes)) => {
                for note in notes {
                    info!("{note}");
                }
                *known = Some((packages.clone(), files.clone()));
                package_files = files;
            }
            Err(e) => warn!("cannot list what packages ship: {e}"),
        }
    }
    let graph = if collected.is_empty() && package_files.is_empty() {
        first
    } else {
        let opts = mgmt_core::compile::CompileOptions {
            package_files,
            collected,
            ..Default::default()
        };
        mgmt_core::compile::compile_with(name, text, &opts).map_err(|e| e.to_string())?
    };
    for w in &graph.warnings {
        warn!("{w}");
    }
    Ok(graph)
}

/// Renders `text` for the host `facts` describe and compiles it (no
/// package AutoEdges, no collection): whether that host could run it.
fn render_and_compile(name: &str, text: &str, facts: &Facts) -> Result<Graph, String> {
    let text = mgmt_core::template::render(name, text, facts).map_err(|e| e.to_string())?;
    let graph = mgmt_core::compile(name, &text).map_err(|e| e.to_string())?;
    for_host(name, graph, &facts.name)
}

/// `graph` (of file `name`), if it may run on `host`; else the error.
fn for_host(name: &str, graph: Graph, host: &str) -> Result<Graph, String> {
    match &graph.hostname {
        Some(want) if want.as_str() != host => Err(format!(
            "error: {name}: graph is for host {want:?}, this is {host:?}"
        )),
        _ => Ok(graph),
    }
}

/// What a host that follows deploys runs before the first one.
fn empty_graph() -> Graph {
    mgmt_core::compile("(no deploy yet)", "graph: empty\n").expect("an empty graph compiles")
}

/// Where a running graph comes from.
enum Origin {
    /// A local `--file`, of at most `max_bytes`.
    File { path: PathBuf, max_bytes: u64 },
    /// The cluster's newest deploy; what could not run here is reported on
    /// `error`.
    Deploys {
        newest: tokio::sync::watch::Receiver<Option<mgmt_core::deploy::Deploy>>,
        error: tokio::sync::watch::Sender<Option<mgmt_core::fleet::DeployError>>,
    },
}

/// Where the running graph comes from, and what a new one is published to.
struct Sources {
    origin: Origin,
    facts: LaterFacts,
    hostname: String,
    /// Every host's exports, kept current by [`exports::follow`] (empty
    /// without a store).
    exports: exports::Shared,
    /// Where this host publishes its own exports (none without a store).
    store: Option<(mgmt_store::client::EtcdClient, tokio::runtime::Handle)>,
}

/// What `mgmt run` does when its graph file, the newest deploy or the
/// collected exports change: read and compile again, and if the text or the
/// collected set changed and it compiles for this host, hand it over (and
/// publish its exports). A deploy that does not render or compile here is
/// reported once (logged, and on the origin's `error`), not retried until
/// the exports change or a newer deploy comes.
fn reloader(
    src: Sources,
    text: String,
    known: PackageFacts,
    trigger: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> mgmt_io::Reload {
    // What runs (or last failed here): its tag, its text and the exports.
    let mut current = (0, text, Vec::new());
    let mut known = known;
    let path = match &src.origin {
        Origin::File { path, .. } => Some(path.clone()),
        Origin::Deploys { .. } => None,
    };
    mgmt_io::Reload {
        path,
        trigger,
        compile: Box::new(move || {
            let (tag, name, text) = match &src.origin {
                Origin::File { path, max_bytes } => {
                    let text = read_graph(path, *max_bytes)
                        .map_err(|e| format!("error: {}: {e}", path.display()))?;
                    (0, path.display().to_string(), text)
                }
                Origin::Deploys { newest, .. } => match &*newest.borrow() {
                    Some(d) => (d.id, d.source_name(), d.text.clone()),
                    None => return Ok(None),
                },
            };
            let exports = src
                .exports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if (tag, &text, &exports) == (current.0, &current.1, &current.2) {
                return Ok(None);
            }
            current = (tag, text, exports);
            let (_, text, exports) = &current;
            // The driver calls this on a blocking thread, never on its runtime.
            let compiled = compile_text(&name, text, &src.facts, exports, &mut known)
                .and_then(|graph| for_host(&name, graph, &src.hostname));
            if let Origin::Deploys { error, .. } = &src.origin {
                error.send_replace(compiled.as_ref().err().map(|message| {
                    mgmt_core::fleet::DeployError {
                        deploy: tag,
                        message: message.clone(),
                    }
                }));
            }
            let graph = compiled?;
            log_notes(&graph);
            if let Some((client, rt)) = &src.store {
                let (client, host) = (client.clone(), src.hostname.clone());
                let exported = graph.exported.clone();
                rt.spawn(async move {
                    if let Err(e) = exports::publish(&client, &host, &exported).await {
                        warn!("exports: cannot publish: {e}");
                    }
                });
            }
            if tag != 0 {
                info!("{name}: rendered and compiled for {}", src.hostname);
            }
            Ok(Some((graph, tag)))
        }),
    }
}

/// The text of a graph file: a regular file of at most `max_bytes`. It is
/// opened without blocking, so a FIFO with no writer is refused at once
/// rather than waited on, and read no further than the cap, so a device
/// that never ends (`/dev/zero`) cannot fill memory.
fn read_graph(path: &Path, max_bytes: u64) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    // Looked at before it is opened (opening some devices acts on them),
    // and again once open, in case it was swapped in between.
    let must_be_regular = |t: std::fs::FileType| {
        let what = if t.is_file() {
            return Ok(());
        } else if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        Err(format!("the graph must be a regular file, this is {what}"))
    };
    must_be_regular(
        std::fs::metadata(path)
            .map_err(|e| e.to_string())?
            .file_type(),
    )?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    must_be_regular(meta.file_type())?;
    let too_big = || {
        format!("the graph is larger than {max_bytes} bytes (raise --max-graph-bytes to allow it)")
    };
    if meta.len() > max_bytes {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

fn run(args: RunArgs) -> ExitCode {
    let started = std::time::Instant::now();
    let clustered = !(args.no_server && args.seeds.is_none());
    // The machine's own name matters only to the store.
    let hostname = args.hostname.clone().unwrap_or_else(machine_hostname);
    if args.converged_timeout < -1 {
        report!(
            "error: --converged-timeout must be -1 (forever) or >= 0, not {}",
            args.converged_timeout
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    // A host name picks the store's directory and names this host's
    // /_mgmt/ keys: checked before anything starts.
    if (args.hostname.is_some() || clustered)
        && let Err(e) = mgmt_core::Hostname::parse(&hostname)
    {
        match args.hostname {
            Some(_) => report!("error: --hostname: {e}"),
            None => report!("error: this machine's {e}; give one with --hostname"),
        }
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let urls = (
        mgmt_store::parse_urls(&args.client_urls),
        mgmt_store::parse_urls(&args.server_urls),
        mgmt_store::parse_urls(args.seeds.as_deref().unwrap_or("")),
    );
    let (client_urls, peer_urls, seeds) = match urls {
        (Ok(c), Ok(p), Ok(s)) => (c, p, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            report!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if args.seeds.is_some() && seeds.is_empty() {
        report!("error: --seeds needs at least one URL");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let serving = !args.no_server;
    let tls = match tls::links(&args.tls, serving, &client_urls, &peer_urls, &seeds) {
        Ok(links) => links,
        Err(e) => {
            report!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let single_pass = args.converged_timeout == 0;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(not(feature = "system-allocator"))]
    {
        allocator::release_when_idle(&mut builder);
        if single_pass {
            allocator::keep_freed_until_exit();
        }
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // No server and no seeds: no cluster at all, just the graph.
    let cluster_config = clustered.then(|| {
        let mut store = mgmt_store::StoreConfig::new(hostname.clone(), args.prefix.clone());
        store.client_urls = client_urls;
        store.peer_urls = peer_urls;
        store.env = mgmt_store::Env::tokio().with_tls(tls);
        store.keep_revisions = args.keep_revisions;
        store.limits = mgmt_store::Limits {
            max_request_bytes: args.max_request_bytes,
            max_txn_ops: args.max_txn_ops,
            quota_backend_bytes: args.quota_backend_bytes,
        };
        let mut config = mgmt_store::cluster::ClusterConfig::new(store);
        config.server = !args.no_server;
        config.seeds = seeds;
        config.ideal_cluster_size = args.ideal_cluster_size;
        config.single_pass = single_pass;
        config
    });
    // A host on its own (a server, no seeds) starts its store now, on the
    // runtime's threads, while this thread reads and compiles the graph:
    // the store's start and election then cost a one-shot run nothing of
    // its own. A host that joins others waits for a graph that compiles, so
    // that bad input never touches the cluster.
    let (begun, cluster_config) = match cluster_config {
        Some(config) if config.seeds.is_empty() => (
            Some(runtime.spawn(mgmt_store::cluster::Cluster::begin(config))),
            None,
        ),
        config => (None, config),
    };
    let facts = LaterFacts::gather_on(&runtime, &hostname);
    let loaded = match &args.file {
        Some(file) => load(file, args.max_graph_bytes, &facts),
        None if clustered => Ok((String::new(), empty_graph(), None)),
        None => {
            report!(
                "error: --file is needed without a store: give a graph, or drop --no-server \
                 (or give --seeds) to run the cluster's deploys"
            );
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (text, graph, known) = match loaded {
        Ok(g) => g,
        Err(code) => return stop_begun(begun, code),
    };
    let name = args.file.as_ref().map(|f| f.display().to_string());
    let graph = match for_host(
        name.as_deref().unwrap_or("(no deploy yet)"),
        graph,
        &hostname,
    ) {
        Ok(graph) => graph,
        Err(e) => {
            report!("{e}");
            return stop_begun(begun, ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    #[cfg(not(feature = "system-allocator"))]
    allocator::release_freed();
    if let Some(dot) = &args.graphviz
        && let Err(e) = std::fs::write(dot, graph.to_dot())
    {
        report!("error: --graphviz {}: {e}", dot.display());
        return stop_begun(begun, ExitCode::from(EXIT_BAD_INPUT));
    }
    log_notes(&graph);
    let notifier = sd_notify::Notifier::from_env().map(std::sync::Arc::new);
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(mgmt_io::Progress::default());
    let metrics = args
        .prometheus
        .then(|| std::sync::Arc::new(metrics::Metrics::new()));
    let opts = mgmt_io::RunOptions {
        noop: args.noop,
        converged_timeout: u64::try_from(args.converged_timeout)
            .ok()
            .map(Duration::from_secs),
        progress: (notifier.is_some() || clustered).then_some(progress_tx.clone()),
        observer: metrics
            .clone()
            .map(|m| m as std::sync::Arc<dyn mgmt_io::Observer>),
        tag: 0,
    };
    // A one-shot run that follows deploys and has none to apply here: its
    // exit status and why.
    let mut nothing_applied: Option<(u8, String)> = None;
    let report = runtime.block_on(async {
        let shutdown = shutdown_signal();
        // A one-shot run of a file that needs nothing from the store (no
        // exports to publish, nothing to collect) runs its graph while the
        // store elects its leader, and the store's last word (this host's
        // status) comes after. A server that cannot start (a port in use)
        // still stops the run before its graph.
        let store_in_background = single_pass
            && args.file.is_some()
            && graph.exported.is_empty()
            && graph.collect.is_empty()
            && metrics.is_none()
            && notifier.is_none();
        let begun = match (begun, cluster_config) {
            (Some(task), _) => Some(task.await.map_err(|e| format!("store: {e}"))?),
            (None, Some(config)) => Some(mgmt_store::cluster::Cluster::begin(config).await),
            (None, None) => None,
        };
        let cluster = begun.transpose().map_err(|e| format!("store: {e}"))?;
        if let Some(cluster) = &cluster
            && !store_in_background
        {
            cluster.ready().await;
            log_serving(cluster);
        }
        info!(
            "running graph {:?} on {hostname}: {} vertices",
            graph.name,
            graph.vertices.len()
        );
        // Exports and collection need a store.
        let shared: exports::Shared = Default::default();
        let (poke_tx, poke_rx) = tokio::sync::mpsc::unbounded_channel();
        let store = cluster.as_ref().map(|c| (c.client(), tokio::runtime::Handle::current()));
        // Publishing withdraws the exports an earlier graph left, too.
        let mut publishing = None;
        if let Some((client, _)) = &store {
            // A host that follows deploys publishes once its deploy compiled
            // (the empty graph's none would withdraw the exports it has).
            if args.file.is_some() {
                let (client, host) = (client.clone(), hostname.clone());
                let exported = graph.exported.clone();
                let publish = async move { exports::publish(&client, &host, &exported).await };
                if store_in_background {
                    publishing = Some(tokio::spawn(publish));
                } else if let Err(e) = publish.await {
                    warn!("exports: cannot publish: {e}");
                }
            }
            // A single pass that collects nothing never reads the others'
            // exports: no read and no watch of them.
            if !store_in_background {
                tokio::spawn(exports::follow(client.clone(), shared.clone(), poke_tx.clone()));
            }
        } else if !graph.exported.is_empty() || !graph.collect.is_empty() {
            warn!("exported (@@) resources and collect: need a store (drop --no-server, or give --seeds)");
        }
        if let Some(m) = &metrics {
            let listener = tokio::net::TcpListener::bind(args.prometheus_listen)
                .await
                .map_err(|e| format!("--prometheus-listen {}: {e}", args.prometheus_listen))?;
            info!("metrics on http://{}/metrics", args.prometheus_listen);
            let stats = cluster.as_ref().map(|c| c.store_stats());
            let source = move || stats.as_ref().and_then(|s| s.get());
            tokio::spawn(metrics::serve(listener, m.clone(), source));
        }
        if let Some(n) = &notifier {
            let store = cluster.as_ref().map(|c| c.status());
            tokio::spawn(sd_notify::follow(n.clone(), progress_rx, store));
        }
        let (error_tx, error_rx) = tokio::sync::watch::channel(None);
        let origin = match (&args.file, &cluster) {
            (Some(path), _) => Origin::File {
                path: path.clone(),
                max_bytes: args.max_graph_bytes,
            },
            (None, Some(cluster)) => {
                // The newest deploy now, so the run starts with it (a
                // one-shot run applies it) rather than changing over to it.
                let client = cluster.client();
                let first = tokio::time::timeout(
                    Duration::from_secs(5),
                    mgmt_store::fleet::newest(&client),
                )
                .await;
                let first = match first {
                    Ok(Ok((_, first))) => first,
                    Ok(Err(e)) => {
                        warn!("cannot read the newest deploy yet: {e}; following deploys");
                        None
                    }
                    Err(_) => {
                        warn!("cannot read the newest deploy within 5 s; following deploys");
                        None
                    }
                };
                let newest = fleet::follow_deploys(client, first);
                info!("following the cluster's deploys (mgmt deploy)");
                let mut changed = newest.clone();
                let poke = poke_tx.clone();
                tokio::spawn(async move {
                    while changed.changed().await.is_ok() && poke.send(()).is_ok() {}
                });
                Origin::Deploys {
                    newest,
                    error: error_tx,
                }
            }
            (None, None) => unreachable!("checked: no --file needs a cluster"),
        };
        // This host's status in the fleet, until the run ends; with the store
        // in the background, only its last word, once the run is over.
        let status_inputs = cluster.as_ref().map(|c| {
            let inputs = fleet::StatusInputs {
                host: hostname.clone(),
                facts: facts.get().clone(),
                file: args.file.as_ref().map(|f| f.display().to_string()),
                error: error_rx,
                progress: progress_tx.subscribe(),
                store: c.status(),
            };
            (c.client(), inputs)
        });
        let (status, status_at_end) = match status_inputs {
            Some((client, inputs)) if !store_in_background => {
                (Some(tokio::spawn(fleet::publish_status(client, inputs))), None)
            }
            later => (None, later.map(|(_, inputs)| inputs)),
        };
        drop(progress_tx);
        let following = matches!(origin, Origin::Deploys { .. });
        let facts_here = facts.get().clone();
        let mut reload = reloader(
            Sources {
                origin,
                facts,
                hostname: hostname.clone(),
                exports: shared,
                store,
            },
            text,
            known,
            Some(poke_rx),
        );
        let (mut graph, mut opts) = (graph, opts);
        if following {
            // What the newest deploy renders to here, if there is one and it
            // compiles; else (a restart after a deploy this host could not
            // run) the newest older one that does, as it ran before.
            let first = match tokio::task::block_in_place(|| (reload.compile)()) {
                Ok(first) => first,
                Err(e) if single_pass => {
                    nothing_applied = Some((EXIT_BAD_INPUT, e.to_string()));
                    None
                }
                Err(e) => {
                    error!("{e}");
                    let client = cluster.as_ref().map(|c| c.client());
                    match client {
                        Some(c) => fleet::newest_that_compiles(&c, &facts_here).await,
                        None => None,
                    }
                }
            };
            match first {
                Some((first, id)) => {
                    info!(
                        "running deploy {id}, graph {:?}: {} vertices",
                        first.name,
                        first.vertices.len()
                    );
                    (graph, opts.tag) = (first, id);
                }
                None if single_pass && nothing_applied.is_none() => {
                    nothing_applied = Some((
                        EXIT_FAILED,
                        "error: no deploy to apply here (mgmt deploy puts one in)".into(),
                    ));
                }
                None => info!("no deploy runs here yet: running an empty graph until one does"),
            }
        }
        let report = match &nothing_applied {
            Some((_, why)) => {
                // The run's progress ends here: the status task says goodbye.
                drop((opts, reload));
                Err(why.clone())
            }
            None => mgmt_io::run(graph, opts, Some(reload), shutdown)
                .await
                .map_err(|e| e.to_string()),
        };
        if let Some(n) = &notifier {
            n.send("STOPPING=1");
        }
        // The status and the shutdown come once the store is ready, as they
        // would after `Cluster::start` (a store asked to stop while still
        // starting hung a run at its end).
        if store_in_background && let Some(cluster) = &cluster {
            cluster.ready().await;
            log_serving(cluster);
        }
        if let Some(task) = publishing
            && let Ok(Err(e)) = task.await
        {
            warn!("exports: cannot publish: {e}");
        }
        // The run's progress is gone: the status task says goodbye (its
        // alive key revoked) while the store still serves; a run whose store
        // ran in the background has only its last status to write.
        let goodbye = async {
            if let Some(task) = status {
                let _ = task.await;
            }
            if let (Some(inputs), Some(cluster)) = (status_at_end, &cluster) {
                fleet::write_final_status(cluster, inputs).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(3), goodbye)
            .await
            .is_err()
        {
            warn!("status: could not say goodbye in 3 s");
        }
        match cluster {
            // The process ends next.
            Some(cluster) if single_pass => cluster.shutdown_before_exit().await,
            Some(cluster) => cluster.shutdown().await,
            None => {}
        }
        report
    });
    // A single pass leaves nothing on the runtime's threads that must end
    // in order (all its store wrote is durable; a store left running ends
    // with the process, `Cluster::shutdown_before_exit`) and the process
    // ends next (`_exit`), which ends them: waking each to end on its own
    // cost every run 1-1.5 ms, and waking them to drop their tasks
    // (`shutdown_background`) 0.1-0.4 ms.
    if single_pass {
        std::mem::forget(runtime);
    }
    if let Ok(report) = &report {
        let summary = report::Summary::of(report, started.elapsed());
        info!(
            "summary: {} resources, {} changed, {} failed, {:.2} s",
            summary.resources, summary.changed, summary.failed, summary.seconds
        );
        if let Some(path) = &args.report {
            let json = report::json(report, &summary, &report.graph, &hostname, args.noop);
            if let Err(e) = report::write(path, &json) {
                error!("--report {}: {e}", path.display());
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    if let Some((code, why)) = nothing_applied {
        report!("{why}");
        return ExitCode::from(code);
    }
    match report {
        Ok(report) if report.failed.is_empty() => {
            if report.converged {
                info!("converged");
            }
            ExitCode::SUCCESS
        }
        Ok(report) => {
            let names: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
            error!("failed: {}", names.join(", "));
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Stops the store a run began before its graph compiled, for a run that
/// ends before its graph runs (bad input): at once, without leaving the
/// cluster or a word in the log, as the run would have without a store. Its
/// state is safe to leave mid-start (it survives `kill -9`), and a lone
/// member has no one to say goodbye to.
fn stop_begun(
    begun: Option<
        tokio::task::JoinHandle<
            Result<mgmt_store::cluster::Cluster, mgmt_store::cluster::ClusterError>,
        >,
    >,
    code: ExitCode,
) -> ExitCode {
    if let Some(task) = begun {
        task.abort();
    }
    code
}

/// The compile's notes (AutoEdges added, resources grouped), one INFO line each.
fn log_notes(graph: &Graph) {
    logging::batched(|| logging::info_lines(graph.note_texts()));
}

fn log_serving(cluster: &mgmt_store::cluster::Cluster) {
    if let Some(urls) = cluster.status().borrow().server.clone() {
        info!("store serving the etcd API on {}", urls.join(", "));
    }
}

/// SIGTERM or SIGINT, as a future. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while
/// the store is still starting is kept for the run, which then stops cleanly
/// at once (the default action would kill the agent mid-start).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = int.recv() => info!("SIGINT"),
        }
    }
}

fn restore(args: RestoreArgs) -> ExitCode {
    let hostname = args.hostname.unwrap_or_else(machine_hostname);
    let config = mgmt_store::StoreConfig::new(hostname, args.prefix);
    match mgmt_store::restore_snapshot(&config, &args.file) {
        Ok(dir) => {
            info!(
                "restored {} into {}: `mgmt run` here without --seeds starts a new cluster from it",
                args.file.display(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `bytes` to stdout; a closed pipe (`mgmt man | head`) is not an error.
fn print_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            error!("cannot write to stdout: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn machine_hostname() -> String {
    nix_hostname().unwrap_or_else(|| "localhost".to_string())
}

fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::args;

    /// The flags' defaults are written out in `args` (it needs only clap, for
    /// the build script): they must stay the store's own.
    #[test]
    fn the_store_limit_flags_default_to_the_store_s_limits() {
        let limits = mgmt_store::Limits::default();
        assert_eq!(args::DEFAULT_MAX_REQUEST_BYTES, limits.max_request_bytes);
        assert_eq!(args::DEFAULT_MAX_TXN_OPS, limits.max_txn_ops);
        assert_eq!(
            args::DEFAULT_QUOTA_BACKEND_BYTES,
            limits.quota_backend_bytes
        );
        assert_eq!(
            args::DEFAULT_KEEP_REVISIONS,
            mgmt_store::DEFAULT_KEEP_REVISIONS
        );
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        args::Cli::command().debug_assert();
    }
}
