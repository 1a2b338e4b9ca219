//! The command line: every subcommand and flag, and nothing else. It needs
//! only clap, so the build script compiles it too (`#[path]`) and writes the
//! man page and shell completions the package ships from the same
//! definition `mgmt` parses with.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// The most bytes a graph file may have unless --max-graph-bytes says more:
/// 64 MiB, far beyond any hand-written graph (100 000 resources take ~5 MB).
pub const DEFAULT_MAX_GRAPH_BYTES: u64 = 64 << 20;
/// Upstream mgmt's default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9233";
/// The store's limits, as etcd's defaults (`mgmt_store::Limits::default()`,
/// checked equal by a test).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;
/// `mgmt_store::DEFAULT_KEEP_REVISIONS` (checked equal by the same test).
pub const DEFAULT_KEEP_REVISIONS: u64 = 1000;

#[derive(Parser)]
#[command(
    name = "mgmt",
    version,
    about = "Event-driven, parallel configuration management"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines look on stderr.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: LogFormat,
}

#[derive(Subcommand)]
pub enum Command {
    /// Compile a graph and keep this machine in the state it describes.
    Run(Box<RunArgs>),
    /// Compile a graph and print it as JSON, without running anything.
    Graph(GraphArgs),
    /// Put a graph into the cluster for every agent to run (rendered by each
    /// host with its facts), list, show or roll back deploys.
    Deploy(Box<DeployArgs>),
    /// One row per host of the fleet: what it runs, how that went, whether
    /// it answers.
    Status(StatusArgs),
    /// Put a file of `etcdctl snapshot save` into this host's empty store
    /// directory: the next `mgmt run` here without --seeds starts a new
    /// cluster holding its keys.
    Restore(RestoreArgs),
    /// Certificates for TLS on both links: `mgmt tls init DIR --hosts h1,h2,h3`.
    Tls(TlsCommand),
    /// Print a completion script for SHELL (bash, zsh, fish) on stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout: `mgmt man | man -l -`.
    Man,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// This host's name (default: the machine's), as `mgmt run` will be given.
    #[arg(long)]
    pub hostname: Option<String>,
    /// As `mgmt run` will be given.
    #[arg(long, default_value = "/var/lib/mgmt/")]
    pub prefix: PathBuf,
}

#[derive(Args)]
pub struct GraphArgs {
    /// The graph, in YAML.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Render the graph for this host: what it would run. Its facts are
    /// this machine's but for the name, or with --from-cluster the ones it
    /// published.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Render with the facts --hostname published in the cluster (its status).
    #[arg(long, requires = "hostname")]
    pub from_cluster: bool,
    /// Refuse a graph file larger than this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_GRAPH_BYTES)]
    pub max_graph_bytes: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct RunArgs {
    /// The graph, in YAML (a template, rendered with this host's facts).
    /// Without it, in a cluster, this host runs the cluster's newest deploy
    /// (`mgmt deploy`), and an empty graph before the first.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Refuse a graph file larger than this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_GRAPH_BYTES)]
    pub max_graph_bytes: u64,
    /// Exit after this many seconds with nothing to do; -1 runs forever; 0 makes
    /// a single pass (no watches).
    #[arg(long, short = 't', default_value_t = -1, allow_negative_numbers = true)]
    pub converged_timeout: i64,
    /// Check only: report what would change, change nothing.
    #[arg(long)]
    pub noop: bool,
    /// Write the compiled graph to this file in Graphviz dot.
    #[arg(long, short = 'g')]
    pub graphviz: Option<PathBuf>,
    /// This host's name (default: the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Where the store's etcd API listens; comma- or semicolon-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub client_urls: String,
    /// Where store peers reach this host; comma- or semicolon-separated.
    #[arg(
        long,
        visible_alias = "peer-urls",
        default_value = "http://127.0.0.1:2380"
    )]
    pub server_urls: String,
    /// Run no store server on this host (with --seeds: only a client of that cluster).
    #[arg(long)]
    pub no_server: bool,
    /// Client URLs of an existing cluster to join (comma- or semicolon-separated);
    /// without it this host starts a new cluster.
    #[arg(long)]
    pub seeds: Option<String>,
    /// Directory holding all state (the store's data lives in PREFIX/HOSTNAME/).
    #[arg(long, default_value = "/var/lib/mgmt/")]
    pub prefix: PathBuf,
    /// The cluster size to aim for, written to /_mgmt/idealClusterSize when this
    /// host starts the cluster (unset: the stored value is kept, 5 if none);
    /// change it live with etcdctl.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub ideal_cluster_size: Option<u32>,
    /// The store refuses a put, txn or delete larger than this (etcd's flag).
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// The most compares, or operations of one branch, in a txn (etcd's flag).
    #[arg(long, default_value_t = DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: usize,
    /// Once the store would outgrow this many bytes (history included) it raises
    /// the NOSPACE alarm and refuses writes that grow it, as etcd does: compact,
    /// delete, then `etcdctl alarm disarm`.
    #[arg(long, default_value_t = DEFAULT_QUOTA_BACKEND_BYTES)]
    pub quota_backend_bytes: u64,
    /// Revisions of the store's key history kept behind the newest: the leader
    /// compacts older ones away once it holds twice as many (etcd's
    /// `--auto-compaction-mode=revision`). 0 keeps the whole history.
    #[arg(long, default_value_t = DEFAULT_KEEP_REVISIONS)]
    pub keep_revisions: u64,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve Prometheus metrics (`GET /metrics`).
    #[arg(long)]
    pub prometheus: bool,
    /// Where `--prometheus` listens.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN, requires = "prometheus")]
    pub prometheus_listen: std::net::SocketAddr,
    /// When the run ends, write a JSON report of every resource's outcome
    /// and timing to FILE (Puppet's last-run report is the model).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// How to reach the cluster, as a client.
#[derive(Args)]
pub struct ClientArgs {
    /// Client URLs of the cluster's members (comma- or semicolon-separated).
    #[arg(
        long,
        visible_alias = "endpoints",
        default_value = "http://127.0.0.1:2379"
    )]
    pub seeds: String,
    /// A client certificate, for https:// seeds whose members ask for one
    /// (its common name is who deploys, under auth).
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA the members' certificates are checked against (https:// seeds).
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// An etcd user, as etcdctl takes it: `NAME:PASSWORD` (or the password
    /// in --password). Under auth, who deploys.
    #[arg(long, value_name = "NAME[:PASSWORD]")]
    pub user: Option<String>,
    /// The password of --user.
    #[arg(long, requires = "user")]
    pub password: Option<String>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("what").args(["file", "list", "show", "rollback"]).required(true)))]
pub struct DeployArgs {
    /// The graph (a template, rendered by every host for itself) to deploy.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// List the stored deploys, oldest first.
    #[arg(long)]
    pub list: bool,
    /// Print the text of deploy ID.
    #[arg(long, value_name = "ID")]
    pub show: Option<u64>,
    /// Deploy again the text of deploy ID (default: the one before the newest),
    /// as a new deploy.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "0")]
    pub rollback: Option<u64>,
    /// Deploy even if the graph does not render or compile for some hosts
    /// (they keep the graph they run, and say so in `mgmt status`).
    #[arg(long)]
    pub force: bool,
    /// Then wait until every live host runs it and converged: exit 0, or 1
    /// with the hosts that failed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    /// Refuse a graph file larger than this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_GRAPH_BYTES)]
    pub max_graph_bytes: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// One JSON array of hosts instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Wait until every live host runs deploy ID and converged: exit 0, or 1
    /// with the hosts that failed.
    #[arg(long, value_name = "ID")]
    pub wait: Option<u64>,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Default)]
pub struct TlsArgs {
    /// This host's certificate for its https:// client URLs, presented too when
    /// it dials other members' client URLs or https:// seeds.
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA that signs the client link's certificates: clients' under
    /// --client-cert-auth, and the servers' this host dials.
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Ask every client of the client URLs for a certificate signed by
    /// --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// This host's certificate for its https:// server (peer) URLs, presented
    /// too when it dials other members' peer URLs.
    #[arg(long, value_name = "FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file.
    #[arg(long, value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA that signs every member's peer certificate.
    #[arg(long, value_name = "FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Accepted for etcd's sake: peer links over TLS always authenticate both
    /// ends.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
}

#[derive(Args)]
pub struct TlsCommand {
    #[command(subcommand)]
    pub command: TlsSubcommand,
}

#[derive(Subcommand)]
pub enum TlsSubcommand {
    /// Make a CA, a certificate and key per host, and one for the operator's
    /// etcdctl (root.crt, root.key), in DIR; refuses if any of them exists.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Where the files go (created if missing).
    pub dir: PathBuf,
    /// The hosts, comma-separated: each gets HOST.crt and HOST.key, for the
    /// name HOST.
    #[arg(long, value_delimiter = ',', required = true)]
    pub hosts: Vec<String>,
    /// More names and addresses every host certificate is valid for
    /// (repeatable; default: localhost, 127.0.0.1, ::1). Give the addresses
    /// the hosts' URLs use.
    #[arg(long = "san", value_name = "NAME|IP")]
    pub sans: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Human,
    /// One JSON object per line, for log shippers (`jq` reads every line).
    Json,
}
