//! Generates the gRPC code from `proto/` with protox, a protobuf compiler written in Rust,
//! so a fresh machine needs nothing beyond crates.io to build; and the list of methods
//! whose `idempotency_level` option says a caller may safely retry them.

use std::path::Path;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/comb/catalog/v1/catalog.proto",
    "proto/comb/users/v1/users.proto",
    "proto/comb/inventory/v1/inventory.proto",
    "proto/comb/cart/v1/cart.proto",
    "proto/comb/payments/v1/payments.proto",
    "proto/comb/shipping/v1/shipping.proto",
    "proto/comb/orders/v1/orders.proto",
    "proto/comb/events/v1/feed.proto",
    "proto/comb/notifications/v1/notifications.proto",
    "proto/comb/recommendations/v1/recommendations.proto",
    "proto/comb/reports/v1/reports.proto",
    "proto/comb/reviews/v1/reviews.proto",
    "proto/comb/versions/v1/versions.proto",
    "proto/comb/media/v1/media.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        if !Path::new(proto).exists() {
            return Err(format!("missing protocol file {proto}").into());
        }
    }
    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    write_retry_safe_methods(&descriptors)?;
    write_client_streaming_methods(&descriptors)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Writes `client_streaming.rs`: the paths of every method whose caller sends a stream.
fn write_client_streaming_methods(
    descriptors: &prost_types::FileDescriptorSet,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut paths = Vec::new();
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                if method.client_streaming() {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    write_paths("client_streaming.rs", paths)
}

fn write_paths(file: &str, mut paths: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    paths.sort();
    let mut code = String::from("&[\n");
    for path in paths {
        code.push_str(&format!("    {path:?},\n"));
    }
    code.push(']');
    let out = std::env::var("OUT_DIR")?;
    std::fs::write(Path::new(&out).join(file), code)?;
    Ok(())
}

/// Writes `retry_safe.rs`: the paths (`/package.Service/Method`) of every method declared
/// `NO_SIDE_EFFECTS` or `IDEMPOTENT`.
fn write_retry_safe_methods(
    descriptors: &prost_types::FileDescriptorSet,
) -> Result<(), Box<dyn std::error::Error>> {
    use prost_types::method_options::IdempotencyLevel;
    let mut paths = Vec::new();
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(IdempotencyLevel::IdempotencyUnknown, |options| {
                        options.idempotency_level()
                    });
                if level != IdempotencyLevel::IdempotencyUnknown {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    write_paths("retry_safe.rs", paths)
}
