//! Inventory over real databases: reservations on SQLite and PostgreSQL, concurrency that
//! must not oversell, and the gRPC API.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use comb_contracts::inventory::v1 as proto;
use comb_contracts::inventory::v1::inventory_client::InventoryClient;
use comb_inventory::store::{InventoryStore, Line, Seed, Status, StoreError};
use comb_kit::ServiceConfig;
use comb_testkit::{TestDatabase, TestServer};
use tonic::Code;

async fn store_over(database: &TestDatabase) -> InventoryStore {
    let config = ServiceConfig::resolve(
        "inventory",
        BTreeMap::new(),
        [("COMB_DATABASE_URL", database.url.clone())],
    )
    .unwrap();
    comb_inventory::open_store(&config).await.unwrap()
}

fn line(sku: &str, quantity: i64) -> Line {
    Line {
        sku: sku.into(),
        quantity,
    }
}

async fn available(store: &InventoryStore, sku: &str) -> i64 {
    store.available(&[sku.to_owned()]).await.unwrap()[0].quantity
}

const NOW: i64 = 1_000_000;
const LATER: i64 = NOW + 60_000;

#[tokio::test]
async fn reservations_on_sqlite() {
    let database = TestDatabase::sqlite();
    exercise(&store_over(&database).await).await;
}

#[tokio::test]
async fn reservations_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&store_over(&database).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_oversell_on_sqlite() {
    let database = TestDatabase::sqlite();
    race_for_the_last_items(store_over(&database).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_oversell_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    race_for_the_last_items(store_over(&database).await).await;
}

async fn exercise(store: &InventoryStore) {
    let seed = Seed::bundled().unwrap();
    assert!(seed.stock.len() >= 60);
    let sold_out = seed.stock.iter().find(|(_, q)| **q == 0).unwrap().0.clone();
    store.set_stock("A-1", 5, NOW).await.unwrap();
    store.set_stock("B-1", 3, NOW).await.unwrap();

    // All or nothing.
    let short = store
        .reserve("o-none", &[line("A-1", 2), line(&sold_out, 1)], NOW, LATER)
        .await;
    assert!(
        matches!(&short, Err(StoreError::OutOfStock(skus)) if skus == &vec![sold_out.clone()]),
        "{short:?}"
    );
    assert_eq!(
        available(store, "A-1").await,
        5,
        "nothing taken when one line is short"
    );
    let unknown = store
        .reserve("o-unknown", &[line("NO-SUCH", 1)], NOW, LATER)
        .await;
    assert!(matches!(unknown, Err(StoreError::OutOfStock(_))));

    // Idempotent per order; duplicate lines merge.
    let first = store
        .reserve(
            "o-1",
            &[line("A-1", 1), line("A-1", 1), line("B-1", 1)],
            NOW,
            LATER,
        )
        .await
        .unwrap();
    assert_eq!(first.lines, vec![line("A-1", 2), line("B-1", 1)]);
    let again = store
        .reserve("o-1", &[line("A-1", 2), line("B-1", 1)], NOW, LATER)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(
        (available(store, "A-1").await, available(store, "B-1").await),
        (3, 2)
    );

    // Commit is final and repeatable; a committed reservation cannot be released.
    assert_eq!(
        store.commit("o-1", NOW).await.unwrap().status,
        Status::Committed
    );
    assert_eq!(
        store.commit("o-1", NOW).await.unwrap().status,
        Status::Committed
    );
    assert!(matches!(
        store.release("o-1", NOW).await,
        Err(StoreError::NotReserved {
            status: Status::Committed,
            ..
        })
    ));
    assert_eq!(available(store, "A-1").await, 3);

    // Release gives back, once; the order cannot reserve again afterwards.
    store
        .reserve("o-2", &[line("A-1", 3)], NOW, LATER)
        .await
        .unwrap();
    assert_eq!(available(store, "A-1").await, 0);
    assert_eq!(
        store.release("o-2", NOW).await.unwrap().status,
        Status::Released
    );
    assert_eq!(
        store.release("o-2", NOW).await.unwrap().status,
        Status::Released
    );
    assert_eq!(available(store, "A-1").await, 3);
    assert_eq!(
        store
            .reserve("o-2", &[line("A-1", 1)], NOW, LATER)
            .await
            .unwrap()
            .status,
        Status::Released
    );
    assert_eq!(available(store, "A-1").await, 3);
    assert!(matches!(
        store.commit("o-2", NOW).await,
        Err(StoreError::NotReserved {
            status: Status::Released,
            ..
        })
    ));

    // A release that overtakes its reserve leaves a mark: the late reserve takes nothing.
    assert_eq!(
        store.release("o-3", NOW).await.unwrap().status,
        Status::Released
    );
    assert_eq!(
        store
            .reserve("o-3", &[line("A-1", 1)], NOW, LATER)
            .await
            .unwrap()
            .status,
        Status::Released
    );
    assert_eq!(available(store, "A-1").await, 3);
    assert!(matches!(
        store.commit("o-404", NOW).await,
        Err(StoreError::Unknown(_))
    ));

    // Expiry gives stock back; an expired reservation cannot be committed.
    store
        .reserve("o-4", &[line("B-1", 2)], NOW, NOW + 10)
        .await
        .unwrap();
    assert_eq!(
        store.expire_due(NOW + 5, 100).await.unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(store.expire_due(NOW + 20, 100).await.unwrap(), 1);
    assert_eq!(available(store, "B-1").await, 2);
    assert!(matches!(
        store.commit("o-4", NOW + 30).await,
        Err(StoreError::NotReserved {
            status: Status::Expired,
            ..
        })
    ));

    // Levels went out as events: every set, every sale, and LowStock at 3 or fewer.
    let published = comb_kit::events::read_outbox(store.database(), "inventory", 0, 500)
        .await
        .unwrap();
    let changed = published
        .iter()
        .filter(|e| e.kind == "comb.stock.changed")
        .count();
    let low: Vec<comb_contracts::events::StockLevel> = published
        .iter()
        .filter(|e| e.kind == "comb.stock.low")
        .map(|e| e.data().unwrap())
        .collect();
    assert_eq!(changed, 4, "two sets, one commit of two lines");
    assert!(
        low.iter()
            .any(|level| level.sku == "B-1" && level.available <= 3),
        "{low:?}"
    );

    // Committing one that is due but not yet swept expires it instead.
    store
        .reserve("o-5", &[line("B-1", 1)], NOW, NOW + 10)
        .await
        .unwrap();
    assert!(matches!(
        store.commit("o-5", NOW + 20).await,
        Err(StoreError::NotReserved {
            status: Status::Expired,
            ..
        })
    ));
    assert_eq!(available(store, "B-1").await, 2);
    assert_eq!(
        store.get("o-5").await.unwrap().unwrap().status,
        Status::Expired
    );
}

async fn race_for_the_last_items(store: InventoryStore) {
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

#[tokio::test]
async fn grpc_checks_input_and_says_why_it_refuses() {
    let database = TestDatabase::sqlite();
    let store = store_over(&database).await;
    store.set_stock("G-1", 1, NOW).await.unwrap();
    let api =
        comb_inventory::api::InventoryApi::new(store.clone(), std::time::Duration::from_secs(60));
    let server = TestServer::start(comb_inventory::routes(api, &store)).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = InventoryClient::new(channel);

    let invalid = client
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

    let reserve = |order: &str, quantity: i64| proto::ReserveRequest {
        order_id: order.into(),
        lines: vec![proto::Line {
            sku: "G-1".into(),
            quantity,
        }],
        ttl_secs: 30,
    };
    let held = client
        .reserve(reserve("g-1", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.status, proto::ReservationStatus::Reserved as i32);
    assert!(held.expires_at_ms > 0);
    let short = client.reserve(reserve("g-2", 1)).await.unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    assert!(
        short.message().contains("out of stock: G-1"),
        "{}",
        short.message()
    );
    let stock = client
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
    let missing = client
        .commit(proto::CommitRequest {
            order_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let set = client
        .set_stock(proto::SetStockRequest {
            sku: "G-1".into(),
            available: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(set.code(), Code::InvalidArgument);
}
