//! The shipping service as `comb serve` builds it: quotes by destination and item count,
//! input refused field by field, one shipment per order with its tracking id, and the
//! shipment events it announces as the shipment's clock advances (checked at given times
//! rather than waited for). Quotes never touch the database, so their tests run on SQLite
//! only; the rest on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use comb_contracts::events::{SHIPMENT_CREATED, SHIPMENT_DELIVERED, SHIPMENT_SHIPPED};
use comb_contracts::shipping::v1 as proto;
use comb_contracts::shipping::v1::shipping_client::ShippingClient;
use comb_shipping::api::ShippingApi;
use comb_testkit::{TestDatabase, TestService};
use tonic::Code;
use tonic::transport::Channel;

/// The shipment clock of the tests that watch announcements: far enough out that the
/// service's own announcer, running on the real clock, never finds anything due.
const SHIP_AFTER_MS: i64 = 3_600_000;
const DELIVER_AFTER_MS: i64 = 7_200_000;

struct Shipping {
    client: ShippingClient<Channel>,
    /// The service's storage and clock opened again beside it, to run its announcer at a
    /// given time and read what it announced.
    api: ShippingApi,
    _service: TestService,
}

/// The service with a shipment clock of `ship_after_secs` and `deliver_after_secs`.
async fn start(database: &TestDatabase, ship_after_secs: i64, deliver_after_secs: i64) -> Shipping {
    let config = comb_testkit::config(
        "shipping",
        &[
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_SHIP_AFTER_SECS", ship_after_secs.to_string()),
            ("COMB_DELIVER_AFTER_SECS", deliver_after_secs.to_string()),
        ],
    );
    let service = TestService::start(comb_shipping::build(config.clone()).await.unwrap()).await;
    Shipping {
        client: ShippingClient::new(service.channel().await),
        api: comb_shipping::open(&config).await.unwrap(),
        _service: service,
    }
}

/// Shipped at once, delivered an hour later.
async fn shipping_at_once(database: &TestDatabase) -> Shipping {
    start(database, 0, 3600).await
}

/// Shipped an hour after creation, delivered two hours after.
async fn shipping_later(database: &TestDatabase) -> Shipping {
    start(database, SHIP_AFTER_MS / 1000, DELIVER_AFTER_MS / 1000).await
}

impl Shipping {
    async fn create(&mut self, order_id: &str) -> proto::Shipment {
        self.client
            .create_shipment(proto::CreateShipmentRequest {
                order_id: order_id.into(),
                address: Some(address("US")),
                item_count: 1,
                recipient: "user-7".into(),
                email: "ada@example.com".into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Announces what is due at `now_ms` as the service's announcer would, then answers
    /// every event announced so far.
    async fn announced_at(&self, now_ms: i64) -> Vec<comb_kit::events::Event> {
        let db = self.api.database();
        comb_shipping::announce_due_at(db, self.api.clock(), now_ms)
            .await
            .unwrap();
        comb_kit::events::read_outbox(db, "shipping", 0, 10)
            .await
            .unwrap()
    }
}

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

fn kinds(events: &[comb_kit::events::Event]) -> Vec<&str> {
    events.iter().map(|event| event.kind.as_str()).collect()
}

#[tokio::test]
async fn a_quote_is_priced_by_destination_and_item_count() {
    let database = TestDatabase::sqlite();
    let mut shipping = shipping_at_once(&database).await;

    let quote = shipping
        .client
        .quote(proto::QuoteRequest {
            address: Some(address("GB")),
            item_count: 2,
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!((quote.cost.unwrap().amount_minor, quote.days), (1499, 7));
}

#[tokio::test]
async fn a_bad_quote_request_is_refused_naming_every_field_at_fault() {
    let database = TestDatabase::sqlite();
    let mut shipping = shipping_at_once(&database).await;
    let mut bad = address("United Kingdom");
    bad.line1 = String::new();

    let refused = shipping
        .client
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
}

async fn a_shipment_gets_a_tracking_id_a_cost_and_its_clocks_status(database: TestDatabase) {
    let mut shipping = shipping_at_once(&database).await;

    let shipment = shipping.create("order-1").await;

    assert!(
        shipment.tracking_id.starts_with("CMB") && shipment.tracking_id.len() == 15,
        "{}",
        shipment.tracking_id
    );
    assert_eq!(shipment.status, proto::ShipmentStatus::Shipped as i32);
    assert_eq!(shipment.cost.unwrap().amount_minor, 499);
}

async fn an_order_has_one_shipment_however_often_it_is_asked_for(database: TestDatabase) {
    let mut shipping = shipping_at_once(&database).await;
    let shipment = shipping.create("order-1").await;

    let again = shipping.create("order-1").await;

    assert_eq!(again, shipment, "one shipment per order");
}

async fn a_shipment_is_found_by_its_order(database: TestDatabase) {
    let mut shipping = shipping_at_once(&database).await;
    let shipment = shipping.create("order-1").await;

    let found = shipping
        .client
        .get_shipment(proto::GetShipmentRequest {
            order_id: "order-1".into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(found, shipment);
}

async fn an_order_without_a_shipment_is_not_found(database: TestDatabase) {
    let mut shipping = shipping_at_once(&database).await;

    let missing = shipping
        .client
        .get_shipment(proto::GetShipmentRequest {
            order_id: "nope".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(missing.code(), Code::NotFound);
}

async fn a_shipment_is_announced_when_created_and_not_shipped_before_its_time(
    database: TestDatabase,
) {
    let mut shipping = shipping_later(&database).await;
    let shipment = shipping.create("order-1").await;

    let announced = shipping
        .announced_at(shipment.created_at_ms + SHIP_AFTER_MS - 1)
        .await;

    assert_eq!(kinds(&announced), [SHIPMENT_CREATED]);
}

async fn a_shipment_is_announced_shipped_once_with_who_to_tell(database: TestDatabase) {
    let mut shipping = shipping_later(&database).await;
    let shipment = shipping.create("order-1").await;
    let shipped_at = shipment.created_at_ms + SHIP_AFTER_MS;

    shipping.announced_at(shipped_at).await;
    let announced = shipping.announced_at(shipped_at).await;

    assert_eq!(
        kinds(&announced),
        [SHIPMENT_CREATED, SHIPMENT_SHIPPED],
        "created with the shipment, shipped once on its clock, not yet delivered"
    );
    let shipped: comb_contracts::events::ShipmentShipped = announced[1].data().unwrap();
    assert_eq!(shipped.tracking_id, shipment.tracking_id);
    assert_eq!(
        (shipped.recipient.as_str(), shipped.email.as_str()),
        ("user-7", "ada@example.com")
    );
}

async fn a_shipment_is_announced_delivered_once_its_clock_says_so(database: TestDatabase) {
    let mut shipping = shipping_later(&database).await;
    let shipment = shipping.create("order-1").await;

    shipping
        .announced_at(shipment.created_at_ms + SHIP_AFTER_MS)
        .await;
    let announced = shipping
        .announced_at(shipment.created_at_ms + DELIVER_AFTER_MS)
        .await;

    assert_eq!(
        kinds(&announced),
        [SHIPMENT_CREATED, SHIPMENT_SHIPPED, SHIPMENT_DELIVERED]
    );
}

comb_testkit::on_each_backend!(
    a_shipment_gets_a_tracking_id_a_cost_and_its_clocks_status,
    an_order_has_one_shipment_however_often_it_is_asked_for,
    a_shipment_is_found_by_its_order,
    an_order_without_a_shipment_is_not_found,
    a_shipment_is_announced_when_created_and_not_shipped_before_its_time,
    a_shipment_is_announced_shipped_once_with_who_to_tell,
    a_shipment_is_announced_delivered_once_its_clock_says_so,
);
