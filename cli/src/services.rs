//! The services this binary can run, and `comb serve`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::Context;
use comb_kit::ServiceConfig;
use comb_kit::service::Service;

use crate::topology::Topology;

use crate::ServeArgs;

type BuildFn = fn(ServiceConfig) -> Pin<Box<dyn Future<Output = anyhow::Result<Service>> + Send>>;

/// Every service comb can run, by name.
pub const SERVICES: &[(&str, BuildFn)] = &[
    ("cart", |config| Box::pin(comb_cart::build(config))),
    ("catalog", |config| Box::pin(comb_catalog::build(config))),
    ("gateway", |config| Box::pin(comb_gateway::build(config))),
    ("inventory", |config| {
        Box::pin(comb_inventory::build(config))
    }),
    ("media", |config| Box::pin(comb_media::build(config))),
    ("media-worker", |config| {
        Box::pin(comb_media_worker::build(config))
    }),
    ("notifications", |config| {
        Box::pin(comb_notifications::build(config))
    }),
    ("orders", |config| Box::pin(comb_orders::build(config))),
    ("payments", |config| Box::pin(comb_payments::build(config))),
    ("recommendations", |config| {
        Box::pin(comb_recommendations::build(config))
    }),
    ("reports", |config| Box::pin(comb_reports::build(config))),
    ("reviews", |config| Box::pin(comb_reviews::build(config))),
    ("shipping", |config| Box::pin(comb_shipping::build(config))),
    ("users", |config| Box::pin(comb_users::build(config))),
];

/// The services that keep no data of their own (the gateway only calls the others; a media
/// worker works on media's files): they get no database.
const STATELESS: &[&str] = &["gateway", "media-worker"];

/// Whether `service` keeps data, and so needs a database of its own.
pub fn keeps_data(service: &str) -> bool {
    !STATELESS.contains(&service)
}

/// The names of the services this binary can run.
pub fn known() -> Vec<&'static str> {
    SERVICES.iter().map(|(name, _)| *name).collect()
}

fn builder(service: &str) -> anyhow::Result<BuildFn> {
    SERVICES
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, build)| *build)
        .with_context(|| {
            format!(
                "there is no service {service:?}; comb runs {}",
                known().join(", ")
            )
        })
}

/// Refuses a topology naming a service this binary cannot run.
pub fn check_runnable(topology: &Topology) -> anyhow::Result<()> {
    let runnable = known();
    if let Some(unknown) = topology
        .services
        .keys()
        .find(|name| !runnable.contains(&name.as_str()))
    {
        anyhow::bail!(
            "the topology names the service {unknown:?}, which this comb cannot run (it runs {})",
            runnable.join(", ")
        );
    }
    Ok(())
}

/// The topology built into comb, used when there is no comb.toml.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../../comb.toml");

/// Loads the topology: the file given, else ./comb.toml, else the built-in one.
pub fn load_topology(
    path: Option<&Path>,
) -> anyhow::Result<(Topology, Option<std::path::PathBuf>)> {
    let path = match path {
        Some(path) => Some(path.to_owned()),
        None => Some(Path::new("comb.toml").to_owned()).filter(|path| path.exists()),
    };
    match path {
        Some(path) => {
            let topology = Topology::load(&path)?;
            let absolute = std::path::absolute(&path).unwrap_or(path);
            Ok((topology, Some(absolute)))
        }
        None => Ok((Topology::parse(DEFAULT_TOPOLOGY)?, None)),
    }
}

/// `comb serve SERVICE`: one instance, configured by the topology's settings and the
/// environment. Its runtime has the instance's `worker_threads`, so it is built here,
/// once the configuration is known.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let build = builder(&args.service)?;
    let file_settings = match &args.config {
        Some(path) => Topology::load(path)?.settings_for(&args.service),
        None => BTreeMap::new(),
    };
    let config = ServiceConfig::resolve(&args.service, file_settings, std::env::vars())?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let runtime = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        threads => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    runtime
        .block_on(comb_kit::service::run(config, build))
        .with_context(|| format!("{} stopped with an error", args.service))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_topology_is_valid_and_runnable() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).expect("built-in topology");
        for service in topology.services.keys() {
            assert!(builder(service).is_ok(), "comb cannot run {service}");
        }
    }

    #[test]
    fn unknown_services_are_named_with_the_known_ones() {
        let error = builder("nope").expect_err("unknown");
        assert!(
            error
                .to_string()
                .contains("cart, catalog, gateway, inventory, media, media-worker, notifications, orders, payments, recommendations, reports, reviews, shipping, users"),
            "{error}"
        );
    }
}
