//! Generates the gRPC code from `proto/` with protox, a protobuf compiler written in Rust,
//! so a fresh machine needs nothing beyond crates.io to build.

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
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        if !Path::new(proto).exists() {
            return Err(format!("missing protocol file {proto}").into());
        }
    }
    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
