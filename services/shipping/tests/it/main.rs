//! The shipping service over gRPC, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use comb_contracts::shipping::v1 as proto;
use comb_contracts::shipping::v1::shipping_client::ShippingClient;
use comb_kit::ServiceConfig;
use comb_testkit::{TestDatabase, TestServer};
use tonic::Code;

fn address(country: &str) -> proto::Address {
    proto::Address {
        name: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        line2: String::new(),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country: country.into(),
    }
}

#[tokio::test]
async fn shipments_on_sqlite() {
    exercise(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn shipments_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&database).await;
}

async fn exercise(database: &TestDatabase) {
    // Shipped at once, delivered an hour later.
    let env = [
        ("COMB_DATABASE_URL", database.url.clone()),
        ("COMB_SHIP_AFTER_SECS", "0".to_owned()),
        ("COMB_DELIVER_AFTER_SECS", "3600".to_owned()),
    ];
    let config = ServiceConfig::resolve("shipping", BTreeMap::new(), env).unwrap();
    let server = TestServer::start(comb_shipping::routes(
        comb_shipping::open(&config).await.unwrap(),
    ))
    .await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ShippingClient::new(channel);

    let quote = client
        .quote(proto::QuoteRequest {
            address: Some(address("GB")),
            item_count: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((quote.cost.unwrap().amount_minor, quote.days), (1499, 7));

    let create = |order: &str| proto::CreateShipmentRequest {
        order_id: order.into(),
        address: Some(address("US")),
        item_count: 1,
        recipient: "user-7".into(),
        email: "ada@example.com".into(),
    };
    let shipment = client
        .create_shipment(create("order-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(shipment.tracking_id.starts_with("CMB") && shipment.tracking_id.len() == 15);
    assert_eq!(shipment.status, proto::ShipmentStatus::Shipped as i32);
    assert_eq!(shipment.cost.clone().unwrap().amount_minor, 499);
    let again = client
        .create_shipment(create("order-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, shipment, "one shipment per order");
    let found = client
        .get_shipment(proto::GetShipmentRequest {
            order_id: "order-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found, shipment);

    let mut bad = address("United Kingdom");
    bad.line1 = String::new();
    let refused = client
        .quote(proto::QuoteRequest {
            address: Some(bad),
            item_count: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> = comb_kit::grpc::field_errors(&refused)
        .unwrap()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["address.line1", "address.country", "item_count"]);
    // Shipped (the clock says at once): announced once, with who to tell.
    let api = comb_shipping::open(&config).await.unwrap();
    comb_shipping::announce_due(api.database(), api.clock())
        .await
        .unwrap();
    comb_shipping::announce_due(api.database(), api.clock())
        .await
        .unwrap();
    let announced = comb_kit::events::read_outbox(api.database(), "shipping", 0, 10)
        .await
        .unwrap();
    let kinds: Vec<&str> = announced.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["comb.shipment.created", "comb.shipment.shipped"],
        "created with the shipment, shipped once on its clock, not yet delivered"
    );
    let shipped: comb_contracts::events::ShipmentShipped = announced[1].data().unwrap();
    assert_eq!(shipped.tracking_id, shipment.tracking_id);
    assert_eq!(
        (shipped.recipient.as_str(), shipped.email.as_str()),
        ("user-7", "ada@example.com")
    );

    let missing = client
        .get_shipment(proto::GetShipmentRequest {
            order_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
