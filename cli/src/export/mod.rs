//! `comb export k8s|compose`: the topology as Kubernetes manifests or a compose file, for
//! running the same services on engines people already operate. The output depends only
//! on the topology and the flags (no clock, no randomness), so it can be committed and
//! diffed.

mod compose;
mod k8s;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use comb_kit::ServiceConfig;

use crate::topology::Topology;
use serde_json::Value;

use crate::services::{check_runnable, load_topology};

pub use self::compose::compose_file;
pub use self::k8s::manifests;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// Kubernetes manifests in a kustomize-friendly directory.
    K8s(K8sArgs),
    /// A docker-compose file.
    Compose(ComposeArgs),
}

/// What every export needs.
#[derive(Debug, Clone, Args)]
pub struct ExportOptions {
    /// The topology file; without it, ./comb.toml, else the topology built into comb.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The comb image every service runs, with a pinned tag or digest (never `latest`).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Send every service's traces over OTLP/HTTP to this collector.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct K8sArgs {
    #[command(flatten)]
    pub options: ExportOptions,
    /// The directory to write the manifests to (created if missing).
    #[arg(long, value_name = "DIR", default_value = "k8s")]
    pub out: PathBuf,
    /// The namespace everything runs in.
    #[arg(long, default_value = "comb")]
    pub namespace: String,
    /// Where PostgreSQL and NATS come from.
    #[arg(long, value_enum, default_value_t = Backing::InCluster)]
    pub backing: Backing,
    /// With `--backing external`: the PostgreSQL server's host name.
    #[arg(long, value_name = "HOST")]
    pub postgres_host: Option<String>,
    /// With `--backing external`: the NATS server's host name.
    #[arg(long, value_name = "HOST")]
    pub nats_host: Option<String>,
}

#[derive(Debug, Args)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub options: ExportOptions,
    /// The file to write; without it, the compose file goes to standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Where the backing services run.
#[derive(Debug, Clone, PartialEq, Eq, ValueEnum)]
pub enum Backing {
    /// Simple single-replica StatefulSets of PostgreSQL and NATS in the namespace.
    InCluster,
    /// Servers run elsewhere, reached through ExternalName Services.
    External,
}

/// The image the manifests name unless told otherwise: this comb's own version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/comb-shop/comb:", env!("CARGO_PKG_VERSION"));
/// The PostgreSQL and NATS images of the in-cluster backing and the compose file.
pub const POSTGRES_IMAGE: &str = "postgres:17.6";
pub const NATS_IMAGE: &str = "nats:2.11.9";
/// Every service listens on this port in a container.
pub const PORT: u16 = 8080;
/// Every instance's admin listener (`/metrics`, fault control): the port Prometheus
/// scrapes, never exposed by a Service.
pub const ADMIN_PORT: u16 = 9090;
const POSTGRES_PORT: u16 = 5432;
const NATS_PORT: u16 = 4222;

/// `comb export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    match args.target {
        ExportTarget::K8s(args) => {
            let topology = topology(&args.options)?;
            let files = manifests(&topology, &args)?;
            write_files(&args.out, &files)?;
            eprintln!(
                "wrote {} files to {}; apply them with `kubectl apply -k {}`",
                files.len(),
                args.out.display(),
                args.out.display()
            );
        }
        ExportTarget::Compose(args) => {
            let topology = topology(&args.options)?;
            let text = compose_file(&topology, &args.options)?;
            match &args.out {
                Some(path) => std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn topology(options: &ExportOptions) -> anyhow::Result<Topology> {
    check_image(&options.image)?;
    if let Some(url) = &options.otlp_endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!(
            "--otlp-endpoint {url}: use an http:// or https:// address of an OTLP/HTTP collector"
        );
    }
    let (topology, _) = load_topology(options.config.as_deref())?;
    check_runnable(&topology)?;
    Ok(topology)
}

/// An image reference must pin what runs: a tag other than `latest`, or a digest.
pub fn check_image(image: &str) -> anyhow::Result<()> {
    if image.contains("@sha256:") {
        return Ok(());
    }
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.split_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag != "latest" => Ok(()),
        _ => bail!(
            "--image {image}: pin a version tag or digest (for example {DEFAULT_IMAGE}); `latest` and untagged images change under a running system"
        ),
    }
}

/// Writes `files` (relative path → contents) under `dir`.
fn write_files(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    for (name, contents) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// YAML documents, each as its own `---` section, under a header comment.
fn yaml_documents(header: &str, documents: &[Value]) -> anyhow::Result<String> {
    let mut text = String::new();
    for line in header.lines() {
        text.push_str(&format!("# {line}\n"));
    }
    for document in documents {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(document).context("cannot write YAML")?);
    }
    Ok(text)
}

/// The environment every service shares: the topology-wide settings (its database comes
/// from its own secret) and how to reach NATS (the in-namespace name, whether it runs there
/// or is an external endpoint) and the trace collector.
fn shared_environment(topology: &Topology, options: &ExportOptions) -> Vec<(String, String)> {
    let mut env = vec![
        ("COMB_LISTEN".to_owned(), format!("0.0.0.0:{PORT}")),
        (
            "COMB_ADMIN_LISTEN".to_owned(),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ),
        ("COMB_DATA_DIR".to_owned(), "/tmp/comb".to_owned()),
        ("COMB_LOG_FORMAT".to_owned(), "json".to_owned()),
        ("COMB_EVENTS_TRANSPORT".to_owned(), "nats".to_owned()),
        (
            "COMB_NATS_URL".to_owned(),
            format!("nats://nats:{NATS_PORT}"),
        ),
        (
            "COMB_NATS_PREFIX".to_owned(),
            topology.launcher.prefix.to_ascii_uppercase(),
        ),
    ];
    for (key, value) in &topology.settings {
        if !is_backend_setting(key) {
            env.push((setting_variable(key), value.clone()));
        }
    }
    if let Some(url) = &options.otlp_endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), url.clone()));
    }
    env.sort();
    env.dedup_by(|later, earlier| later.0 == earlier.0);
    env
}

/// Where media and its workers keep their shared files inside a container: one volume
/// mounted by both (ReadWriteMany on Kubernetes).
pub(crate) const MEDIA_STORE_PATH: &str = "/var/lib/comb/media";

/// Whether `service` reads and writes media's blob store.
pub(crate) fn uses_media_store(service: &str) -> bool {
    service == "media" || service == "media-worker"
}

/// The image `service` runs: the media worker's is the comb image with ffmpeg (the
/// Dockerfile's `media-worker` target), tagged like it with `-media-worker` after the name.
pub(crate) fn image_for(image: &str, service: &str) -> String {
    if service != "media-worker" {
        return image.to_owned();
    }
    let name_end = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_end..].find([':', '@']) {
        Some(tag) => {
            let split = name_end + tag;
            format!("{}-media-worker{}", &image[..split], &image[split..])
        }
        None => format!("{image}-media-worker"),
    }
}

/// The environment of one service: its upstreams and its own settings.
fn service_environment(topology: &Topology, service: &str) -> Vec<(String, String)> {
    let Some(spec) = topology.services.get(service) else {
        return Vec::new();
    };
    let mut env: Vec<(String, String)> = spec
        .calls
        .iter()
        .map(|callee| {
            (
                setting_variable(&format!("upstream_{}", callee.replace('-', "_"))),
                format!("http://{callee}:{PORT}"),
            )
        })
        .collect();
    for (key, value) in &spec.settings {
        if !is_backend_setting(key) {
            env.push((setting_variable(key), value.clone()));
        }
    }
    if uses_media_store(service) && !spec.settings.contains_key("media_store") {
        env.push((setting_variable("media_store"), MEDIA_STORE_PATH.to_owned()));
    }
    env.sort();
    env
}

/// Settings the export decides itself: the database and the event transport.
fn is_backend_setting(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "database_url" | "events_transport" | "nats_url" | "nats_prefix" | "listen" | "data_dir"
    )
}

fn setting_variable(key: &str) -> String {
    format!("COMB_{}", key.to_ascii_uppercase())
}

/// The database URL a service is given, as its own role, with a development password.
fn database_url(topology: &Topology, service: &str, postgres_host: &str) -> String {
    let database = crate::postgres::database_name(&topology.launcher.prefix, service);
    format!(
        "postgres://{database}:{}@{postgres_host}:{POSTGRES_PORT}/{database}",
        development_password(service)
    )
}

/// Passwords are fixed so the export is deterministic; they must be replaced before the
/// system holds anything of value (the generated files say so).
fn development_password(service: &str) -> String {
    format!("change-me-{service}")
}

/// Each service's database and role, with the passwords the export gives them.
fn service_databases(topology: &Topology) -> Vec<crate::postgres::ServiceDatabase> {
    topology
        .services
        .keys()
        .filter(|service| crate::services::keeps_data(service))
        .map(|service| {
            crate::postgres::ServiceDatabase::new(
                &topology.launcher.prefix,
                service,
                development_password(service),
            )
        })
        .collect()
}

/// How long the service drains in-flight work after SIGTERM, in whole seconds, as the
/// service itself reads its settings.
fn drain_seconds(topology: &Topology, service: &str) -> anyhow::Result<u64> {
    let no_env: [(&str, &str); 0] = [];
    let config = ServiceConfig::resolve(service, topology.settings_for(service), no_env)?;
    Ok(config.drain_timeout.as_millis().div_ceil(1000).try_into()?)
}

/// The services that call `service`, by the topology.
fn callers_of(topology: &Topology, service: &str) -> Vec<String> {
    topology
        .services
        .iter()
        .filter(|(_, spec)| spec.calls.iter().any(|callee| callee == service))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_must_be_pinned() {
        assert!(check_image("ghcr.io/comb-shop/comb:0.1.0").is_ok());
        assert!(check_image("registry:5000/comb@sha256:abcd").is_ok());
        assert!(check_image("registry:5000/comb").is_err());
        assert!(check_image("comb:latest").is_err());
        assert!(check_image("comb").is_err());
    }

    #[test]
    fn callers_come_from_the_topology() {
        let topology = Topology::parse(crate::services::DEFAULT_TOPOLOGY)
            .expect("the built-in topology parses");
        assert_eq!(callers_of(&topology, "payments"), vec!["orders".to_owned()]);
        assert!(callers_of(&topology, "gateway").is_empty());
    }
}
