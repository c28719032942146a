//! `comb`: runs comb on one machine. `comb up` starts every service instance of the
//! topology (`comb.toml`) as its own process and supervises them; `comb serve SERVICE`
//! runs one instance (what `comb up` starts, and what a container runs); `status`, `logs`
//! and `down` inspect and stop a running system from another terminal.

pub mod chaos;
pub mod commands;
pub mod cpu;
pub mod export;
pub mod launcher;
pub mod load;
pub mod postgres;
pub mod services;
pub mod topology;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// comb: an online store for books, music and video, built as microservices.
#[derive(Debug, Parser)]
#[command(name = "comb", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start every service of the topology on this machine and supervise it.
    Up(UpArgs),
    /// Run one instance of a service (what `comb up` starts for each instance).
    Serve(ServeArgs),
    /// Show the services and instances of a running system.
    Status(StatusArgs),
    /// Show the logs of a running (or stopped) system.
    Logs(LogsArgs),
    /// Stop a system started with `comb up --detach`.
    Down(DataDirArg),
    /// Change how many instances of a service run, without restarting anything else.
    Scale(ScaleArgs),
    /// Put a shopper load on the gateway and report latencies per operation.
    Load(load::LoadArgs),
    /// Kill instances, inject latency or errors, and check the invariants afterwards.
    Chaos(chaos::ChaosArgs),
    /// Write the topology as Kubernetes manifests or a compose file.
    Export(export::ExportArgs),
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=N, e.g. catalog=3; several may be given.
    #[arg(required = true, value_name = "SERVICE=N")]
    pub targets: Vec<String>,
    /// Return at once instead of waiting for new instances to be ready and removed ones
    /// to stop.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Where comb keeps databases, logs and its state.
    #[arg(long, default_value = ".comb", value_name = "DIR", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The topology file; without it, ./comb.toml, else the topology built into comb.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The gateway's port (0 picks a free one); overrides the topology.
    #[arg(long, value_name = "PORT")]
    pub gateway_port: Option<u16>,
    /// The dashboard's port (0 picks a free one); overrides the topology.
    #[arg(long, value_name = "PORT")]
    pub dashboard_port: Option<u16>,
    /// Also show the dashboard's pages (read-only) on this address, e.g. 0.0.0.0:8091 to
    /// share them beyond this machine; needs --dashboard-token.
    #[arg(long, value_name = "ADDR")]
    pub dashboard_address: Option<std::net::SocketAddr>,
    /// The token the shared dashboard asks for (at least 16 characters); prefer the
    /// environment variable, which other users of the machine cannot read from `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "COMB_DASHBOARD_TOKEN",
        hide_env_values = true
    )]
    pub dashboard_token: Option<String>,
    /// Start in the background and return once every instance is ready.
    #[arg(long)]
    pub detach: bool,
    /// Do not stream the services' logs to the terminal (they are still kept).
    #[arg(long)]
    pub quiet: bool,
    /// Give every service a database and a role of its own on this PostgreSQL server,
    /// through an account that may create them (e.g. postgres://postgres@127.0.0.1/postgres).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Carry events through this NATS JetStream server (e.g. nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// What database, role and stream names begin with (default comb).
    #[arg(long, value_name = "NAME")]
    pub prefix: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service to run.
    pub service: String,
    /// The topology file whose settings apply (COMB_* environment variables override them).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this service's (or this instance's) logs.
    pub service: Option<String>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Print the JSON lines as they are stored.
    #[arg(long)]
    pub raw: bool,
    /// Only the lines of this trace (its id, or the id's first characters).
    #[arg(long, value_name = "ID")]
    pub trace: Option<String>,
    /// Only lines at this level or above.
    #[arg(long, value_enum)]
    pub level: Option<LogLevel>,
}

/// A log level to filter by.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level as log lines spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }
}

/// Parses the command line and runs the command; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    finish(match cli.command {
        // An instance builds the runtime its configuration asks for.
        Command::Serve(args) => services::serve(args),
        Command::Up(args) => block_on(launcher::up(args)),
        Command::Status(args) => block_on(commands::status(args)),
        Command::Logs(args) => block_on(commands::logs(args)),
        Command::Down(args) => block_on(commands::down(args)),
        Command::Scale(args) => block_on(commands::scale(args)),
        Command::Load(args) => block_on(load::load(args)),
        Command::Chaos(args) => block_on(chaos::chaos(args)),
        Command::Export(args) => block_on(export::export(args)),
    })
}

/// Runs a command on a runtime with a thread per core.
fn block_on(
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)
}

/// The exit code of a command; errors are printed with their causes.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("comb: {error:#}");
            ExitCode::FAILURE
        }
    }
}
