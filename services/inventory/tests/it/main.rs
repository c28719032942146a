//! Inventory on SQLite and PostgreSQL. The reservation rules (all or nothing, idempotent
//! per order, commit, release, expiry, what is announced, no overselling under a race) are
//! checked on the store opened as the service opens it, with the time passed in; the gRPC
//! API (refusals, holds, stock levels) on the service as `comb serve` builds it, following
//! a catalog built the same way.
//!
//! Long because each reservation rule is a test of its own, on both backends, sharing
//! this file's helpers.

#![allow(clippy::unwrap_used)]

use comb_contracts::inventory::v1 as proto;
use comb_contracts::inventory::v1::inventory_client::InventoryClient;
use comb_inventory::store::{InventoryStore, Line, Reservation, Seed, Status, StoreError};
use comb_testkit::{TestDatabase, TestService};
use tonic::Code;
use tonic::transport::Channel;

/// The time of the store tests, far from the real clock: only what the test passes in
/// decides what is due.
const NOW: i64 = 1_000_000;
const LATER: i64 = NOW + 60_000;

/// The store as the service opens it (the bundled stock seeded), with A-1 at 5 and B-1 at
/// 3 set at `NOW`.
async fn store_over(database: &TestDatabase) -> InventoryStore {
    let config = comb_testkit::config("inventory", &[("COMB_DATABASE_URL", database.url.clone())]);
    let store = comb_inventory::open_store(&config).await.unwrap();
    store.set_stock("A-1", 5, NOW).await.unwrap();
    store.set_stock("B-1", 3, NOW).await.unwrap();
    store
}

fn line(sku: &str, quantity: i64) -> Line {
    Line {
        sku: sku.into(),
        quantity,
    }
}

/// Reserves `quantity` of `sku` for `order`, until `LATER`: the reservation as the store
/// answers it.
async fn hold(store: &InventoryStore, order: &str, sku: &str, quantity: i64) -> Reservation {
    store
        .reserve(order, &[line(sku, quantity)], NOW, LATER)
        .await
        .unwrap()
}

async fn available(store: &InventoryStore, sku: &str) -> i64 {
    store.available(&[sku.to_owned()]).await.unwrap()[0].quantity
}

fn is_not_reserved(
    result: &Result<comb_inventory::store::Reservation, StoreError>,
    was: Status,
) -> bool {
    matches!(result, Err(StoreError::NotReserved { status, .. }) if *status == was)
}

struct Inventory {
    client: InventoryClient<Channel>,
    _service: TestService,
    _catalog: TestService,
    _catalog_db: TestDatabase,
}

/// The service as `comb serve` builds it, following a catalog of its own, with G-1 at 1.
async fn start(database: &TestDatabase) -> Inventory {
    // The catalog is here only as the feed inventory follows: empty, on SQLite, whichever
    // backend inventory is tested on.
    let catalog_db = TestDatabase::sqlite();
    let catalog_config = comb_testkit::config(
        "catalog",
        &[
            ("COMB_DATABASE_URL", catalog_db.url.clone()),
            ("COMB_SEED", "false".into()),
        ],
    );
    let catalog = TestService::start(comb_catalog::build(catalog_config).await.unwrap()).await;
    let config = comb_testkit::config(
        "inventory",
        &[
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_UPSTREAM_CATALOG", catalog.url()),
        ],
    );
    let service = TestService::start(comb_inventory::build(config).await.unwrap()).await;
    let mut client = InventoryClient::new(service.channel().await);
    // Through the service, so that the levels it keeps know of it at once.
    client
        .set_stock(proto::SetStockRequest {
            sku: "G-1".into(),
            available: 1,
        })
        .await
        .unwrap();
    Inventory {
        client,
        _service: service,
        _catalog: catalog,
        _catalog_db: catalog_db,
    }
}

fn reserve_g1(order: &str, quantity: i64) -> proto::ReserveRequest {
    proto::ReserveRequest {
        order_id: order.into(),
        lines: vec![proto::Line {
            sku: "G-1".into(),
            quantity,
        }],
        ttl_secs: 30,
    }
}

async fn an_empty_store_is_seeded_with_the_bundled_stock_list(database: TestDatabase) {
    let seed = Seed::bundled().unwrap();
    assert!(seed.stock.len() >= 60);

    let store = store_over(&database).await;

    let skus: Vec<String> = seed.stock.keys().cloned().collect();
    let seeded: std::collections::BTreeMap<String, i64> = store
        .available(&skus)
        .await
        .unwrap()
        .into_iter()
        .map(|level| (level.sku, level.quantity))
        .collect();
    assert_eq!(seeded, seed.stock);
}

async fn a_reservation_with_one_line_short_takes_nothing(database: TestDatabase) {
    let store = store_over(&database).await;
    let seed = Seed::bundled().unwrap();
    let sold_out = seed.stock.iter().find(|(_, q)| **q == 0).unwrap().0.clone();

    let short = store
        .reserve("o-none", &[line("A-1", 2), line(&sold_out, 1)], NOW, LATER)
        .await;

    assert!(
        matches!(&short, Err(StoreError::OutOfStock(skus)) if skus == &vec![sold_out.clone()]),
        "{short:?}"
    );
    assert_eq!(
        available(&store, "A-1").await,
        5,
        "nothing taken when one line is short"
    );
}

async fn an_unknown_sku_is_out_of_stock(database: TestDatabase) {
    let store = store_over(&database).await;

    let unknown = store
        .reserve("o-unknown", &[line("NO-SUCH", 1)], NOW, LATER)
        .await;

    assert!(
        matches!(unknown, Err(StoreError::OutOfStock(_))),
        "{unknown:?}"
    );
}

async fn a_reservation_merges_duplicate_lines(database: TestDatabase) {
    let store = store_over(&database).await;

    let reserved = store
        .reserve(
            "o-1",
            &[line("A-1", 1), line("A-1", 1), line("B-1", 1)],
            NOW,
            LATER,
        )
        .await
        .unwrap();

    assert_eq!(reserved.lines, vec![line("A-1", 2), line("B-1", 1)]);
}

async fn reserving_again_for_an_order_answers_the_first_reservation_and_takes_nothing_more(
    database: TestDatabase,
) {
    let store = store_over(&database).await;
    let first = store
        .reserve("o-1", &[line("A-1", 2), line("B-1", 1)], NOW, LATER)
        .await
        .unwrap();

    let again = store
        .reserve("o-1", &[line("A-1", 2), line("B-1", 1)], NOW, LATER)
        .await
        .unwrap();

    assert_eq!(again, first);
    assert_eq!(
        (
            available(&store, "A-1").await,
            available(&store, "B-1").await
        ),
        (3, 2)
    );
}

async fn committing_is_final_and_repeatable(database: TestDatabase) {
    let store = store_over(&database).await;
    store
        .reserve("o-1", &[line("A-1", 2), line("B-1", 1)], NOW, LATER)
        .await
        .unwrap();

    assert_eq!(
        store.commit("o-1", NOW).await.unwrap().status,
        Status::Committed
    );
    assert_eq!(
        store.commit("o-1", NOW).await.unwrap().status,
        Status::Committed
    );
    assert_eq!(available(&store, "A-1").await, 3);
}

async fn a_committed_reservation_cannot_be_released(database: TestDatabase) {
    let store = store_over(&database).await;
    hold(&store, "o-1", "A-1", 2).await;
    store.commit("o-1", NOW).await.unwrap();

    let released = store.release("o-1", NOW).await;

    assert!(
        is_not_reserved(&released, Status::Committed),
        "{released:?}"
    );
    assert_eq!(available(&store, "A-1").await, 3);
}

async fn releasing_gives_the_stock_back_once(database: TestDatabase) {
    let store = store_over(&database).await;
    hold(&store, "o-2", "A-1", 5).await;
    assert_eq!(available(&store, "A-1").await, 0);

    assert_eq!(
        store.release("o-2", NOW).await.unwrap().status,
        Status::Released
    );
    assert_eq!(
        store.release("o-2", NOW).await.unwrap().status,
        Status::Released
    );
    assert_eq!(available(&store, "A-1").await, 5);
}

async fn a_released_order_cannot_reserve_again(database: TestDatabase) {
    let store = store_over(&database).await;
    hold(&store, "o-2", "A-1", 3).await;
    store.release("o-2", NOW).await.unwrap();

    let again = hold(&store, "o-2", "A-1", 1).await;

    assert_eq!(again.status, Status::Released);
    assert_eq!(available(&store, "A-1").await, 5);
}

async fn a_released_reservation_cannot_be_committed(database: TestDatabase) {
    let store = store_over(&database).await;
    hold(&store, "o-2", "A-1", 3).await;
    store.release("o-2", NOW).await.unwrap();

    let committed = store.commit("o-2", NOW).await;

    assert!(
        is_not_reserved(&committed, Status::Released),
        "{committed:?}"
    );
}

async fn a_reserve_overtaken_by_its_release_takes_nothing(database: TestDatabase) {
    let store = store_over(&database).await;

    // The release leaves a mark that the late reserve finds.
    assert_eq!(
        store.release("o-3", NOW).await.unwrap().status,
        Status::Released
    );
    let late = hold(&store, "o-3", "A-1", 1).await;

    assert_eq!(late.status, Status::Released);
    assert_eq!(available(&store, "A-1").await, 5);
}

async fn an_order_without_a_reservation_cannot_be_committed(database: TestDatabase) {
    let store = store_over(&database).await;

    let committed = store.commit("o-404", NOW).await;

    assert!(
        matches!(committed, Err(StoreError::Unknown(_))),
        "{committed:?}"
    );
}

async fn a_reservation_is_not_expired_before_its_time(database: TestDatabase) {
    let store = store_over(&database).await;
    store
        .reserve("o-4", &[line("B-1", 2)], NOW, NOW + 10)
        .await
        .unwrap();

    assert_eq!(
        store.expire_due(NOW + 5, 100).await.unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(available(&store, "B-1").await, 1);
}

async fn a_reservation_past_its_time_is_expired_and_gives_its_stock_back(database: TestDatabase) {
    let store = store_over(&database).await;
    store
        .reserve("o-4", &[line("B-1", 2)], NOW, NOW + 10)
        .await
        .unwrap();

    assert_eq!(store.expire_due(NOW + 20, 100).await.unwrap(), 1);
    assert_eq!(available(&store, "B-1").await, 3);
}

async fn an_expired_reservation_cannot_be_committed(database: TestDatabase) {
    let store = store_over(&database).await;
    store
        .reserve("o-4", &[line("B-1", 2)], NOW, NOW + 10)
        .await
        .unwrap();
    store.expire_due(NOW + 20, 100).await.unwrap();

    let committed = store.commit("o-4", NOW + 30).await;

    assert!(
        is_not_reserved(&committed, Status::Expired),
        "{committed:?}"
    );
}

async fn committing_a_reservation_due_but_not_yet_swept_expires_it_instead(database: TestDatabase) {
    let store = store_over(&database).await;
    store
        .reserve("o-5", &[line("B-1", 1)], NOW, NOW + 10)
        .await
        .unwrap();

    let committed = store.commit("o-5", NOW + 20).await;

    assert!(
        is_not_reserved(&committed, Status::Expired),
        "{committed:?}"
    );
    assert_eq!(available(&store, "B-1").await, 3);
    assert_eq!(
        store.get("o-5").await.unwrap().unwrap().status,
        Status::Expired
    );
}

async fn every_set_and_every_sale_is_announced_but_not_holds_or_give_backs(database: TestDatabase) {
    let store = store_over(&database).await;
    store
        .reserve("o-1", &[line("A-1", 2), line("B-1", 1)], NOW, LATER)
        .await
        .unwrap();
    store.commit("o-1", NOW).await.unwrap();
    hold(&store, "o-2", "A-1", 1).await;
    store.release("o-2", NOW).await.unwrap();
    store
        .reserve("o-4", &[line("B-1", 1)], NOW, NOW + 10)
        .await
        .unwrap();
    store.expire_due(NOW + 20, 100).await.unwrap();

    let published = comb_kit::events::read_outbox(store.database(), "inventory", 0, 500)
        .await
        .unwrap();

    let changed = published
        .iter()
        .filter(|e| e.kind == "comb.stock.changed")
        .count();
    assert_eq!(changed, 4, "two sets, one commit of two lines");
}

async fn a_level_of_three_or_fewer_is_announced_as_low(database: TestDatabase) {
    let store = store_over(&database).await;
    hold(&store, "o-1", "B-1", 1).await;
    store.commit("o-1", NOW).await.unwrap();

    let published = comb_kit::events::read_outbox(store.database(), "inventory", 0, 500)
        .await
        .unwrap();

    let low: Vec<comb_contracts::events::StockLevel> = published
        .iter()
        .filter(|e| e.kind == "comb.stock.low")
        .map(|e| e.data().unwrap())
        .collect();
    assert!(
        low.iter()
            .any(|level| level.sku == "B-1" && level.available <= 3),
        "{low:?}"
    );
    assert!(low.iter().all(|level| level.sku != "A-1"), "{low:?}");
}

/// Fifty orders race for the last ten: ten get one each, forty are told it is out of
/// stock, and none is sold twice. On a runtime with two workers, so that the reservations
/// really run at once.
async fn concurrent_reservations_never_oversell(database: TestDatabase) {
    let store = store_over(&database).await;
    store.set_stock("HOT-1", 10, NOW).await.unwrap();
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..50 {
        let store = store.clone();
        racers.spawn(async move {
            store
                .reserve(&format!("race-{n}"), &[line("HOT-1", 1)], NOW, LATER)
                .await
        });
    }

    let (mut reserved, mut short) = (0, 0);
    while let Some(result) = racers.join_next().await {
        match result.unwrap() {
            Ok(reservation) => {
                assert_eq!(reservation.status, Status::Reserved);
                reserved += 1;
            }
            Err(StoreError::OutOfStock(_)) => short += 1,
            Err(other) => panic!("a reservation failed for another reason: {other}"),
        }
    }
    assert_eq!((reserved, short), (10, 40));
    assert_eq!(available(&store, "HOT-1").await, 0);
}

/// `on_each_backend!` runs its tests on a single-threaded runtime; the race needs two
/// workers, so its pair is spelled out, named as the macro names them.
mod concurrent_reservations_never_oversell {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        super::concurrent_reservations_never_oversell(comb_testkit::TestDatabase::sqlite()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres() {
        if let Some(database) = comb_testkit::TestDatabase::postgres().await {
            super::concurrent_reservations_never_oversell(database).await;
        }
    }
}

/// Checked before anything is read or stored, so one backend is enough.
#[tokio::test]
async fn a_bad_reservation_is_refused_naming_every_field_at_fault() {
    let database = TestDatabase::sqlite();
    let mut inventory = start(&database).await;

    let invalid = inventory
        .client
        .reserve(proto::ReserveRequest {
            order_id: String::new(),
            lines: vec![proto::Line {
                sku: "lower".into(),
                quantity: 0,
            }],
            ttl_secs: 0,
        })
        .await
        .unwrap_err();

    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = comb_kit::grpc::field_errors(&invalid)
        .unwrap()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["order_id", "lines[0].sku", "lines[0].quantity"]);
}

/// Checked before anything is stored, so one backend is enough.
#[tokio::test]
async fn a_negative_stock_level_is_refused() {
    let database = TestDatabase::sqlite();
    let mut inventory = start(&database).await;

    let set = inventory
        .client
        .set_stock(proto::SetStockRequest {
            sku: "G-1".into(),
            available: -1,
        })
        .await
        .unwrap_err();

    assert_eq!(set.code(), Code::InvalidArgument);
}

async fn a_reservation_holds_stock_until_a_deadline(database: TestDatabase) {
    let mut inventory = start(&database).await;

    let held = inventory
        .client
        .reserve(reserve_g1("g-1", 1))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(held.status, proto::ReservationStatus::Reserved as i32);
    assert!(held.expires_at_ms > 0);
}

async fn a_reservation_beyond_the_stock_is_refused_naming_the_sku(database: TestDatabase) {
    let mut inventory = start(&database).await;
    inventory
        .client
        .reserve(reserve_g1("g-1", 1))
        .await
        .unwrap();

    let short = inventory
        .client
        .reserve(reserve_g1("g-2", 1))
        .await
        .unwrap_err();

    assert_eq!(short.code(), Code::FailedPrecondition);
    assert!(
        short.message().contains("out of stock: G-1"),
        "{}",
        short.message()
    );
}

async fn held_stock_is_not_available_and_an_unknown_sku_has_none(database: TestDatabase) {
    let mut inventory = start(&database).await;
    inventory
        .client
        .reserve(reserve_g1("g-1", 1))
        .await
        .unwrap();

    let stock = inventory
        .client
        .get_stock(proto::GetStockRequest {
            skus: vec!["G-1".into(), "NONE-1".into()],
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        stock.items.iter().map(|s| s.available).collect::<Vec<_>>(),
        [0, 0]
    );
}

async fn committing_an_order_without_a_reservation_is_not_found(database: TestDatabase) {
    let mut inventory = start(&database).await;

    let missing = inventory
        .client
        .commit(proto::CommitRequest {
            order_id: "nobody".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(missing.code(), Code::NotFound);
}

comb_testkit::on_each_backend!(
    an_empty_store_is_seeded_with_the_bundled_stock_list,
    a_reservation_with_one_line_short_takes_nothing,
    an_unknown_sku_is_out_of_stock,
    a_reservation_merges_duplicate_lines,
    reserving_again_for_an_order_answers_the_first_reservation_and_takes_nothing_more,
    committing_is_final_and_repeatable,
    a_committed_reservation_cannot_be_released,
    releasing_gives_the_stock_back_once,
    a_released_order_cannot_reserve_again,
    a_released_reservation_cannot_be_committed,
    a_reserve_overtaken_by_its_release_takes_nothing,
    an_order_without_a_reservation_cannot_be_committed,
    a_reservation_is_not_expired_before_its_time,
    a_reservation_past_its_time_is_expired_and_gives_its_stock_back,
    an_expired_reservation_cannot_be_committed,
    committing_a_reservation_due_but_not_yet_swept_expires_it_instead,
    every_set_and_every_sale_is_announced_but_not_holds_or_give_backs,
    a_level_of_three_or_fewer_is_announced_as_low,
    a_reservation_holds_stock_until_a_deadline,
    a_reservation_beyond_the_stock_is_refused_naming_the_sku,
    held_stock_is_not_available_and_an_unknown_sku_has_none,
    committing_an_order_without_a_reservation_is_not_found,
);
