//! The orders store on SQLite and PostgreSQL: idempotent creation, saga progress that
//! only one driver can make, and the search for unfinished sagas.

#![allow(clippy::unwrap_used)]

use comb_kit::events::{self, Event};
use comb_kit::storage::Database;
use comb_orders::store::{Address, Line, Order, OrderStatus, OrderStore, Step};
use comb_testkit::TestDatabase;

fn order(id: &str, owner: &str, key: &str, created_at_ms: i64) -> Order {
    Order {
        id: id.into(),
        owner: owner.into(),
        idempotency_key: key.into(),
        email: "a@example.com".into(),
        status: OrderStatus::Pending,
        step: Step::Reserve,
        cancel_reason: String::new(),
        lines: vec![Line {
            product_id: "p-1".into(),
            sku: "BK-0001".into(),
            title: "A Book".into(),
            quantity: 2,
            unit_price_minor: 500,
            line_total_minor: 1000,
        }],
        subtotal_minor: 1000,
        shipping_minor: 499,
        total_minor: 1499,
        currency: "USD".into(),
        address: Address {
            name: "Ada".into(),
            line1: "1 Way".into(),
            line2: String::new(),
            city: "London".into(),
            postal_code: "N1".into(),
            country: "GB".into(),
        },
        payment_last4: "4242".into(),
        payment_status: comb_orders::store::PaymentStatus::None,
        tracking_id: String::new(),
        release_pending: false,
        void_pending: false,
        deadline_at_ms: created_at_ms + 30_000,
        created_at_ms,
    }
}

/// The trace context of the checkout that placed every order here.
const CHECKOUT_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn placed(id: &str) -> Event {
    let mut event = Event::new(
        "orders",
        "comb.order.placed",
        id,
        &serde_json::json!({"order_id": id}),
    )
    .unwrap();
    event.traceparent = CHECKOUT_TRACE.to_owned();
    event
}

/// The ids of the unfinished sagas; each must carry its checkout's trace context.
async fn unfinished(store: &OrderStore, idle_since_ms: i64) -> Vec<String> {
    store
        .unfinished(idle_since_ms)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, traceparent)| {
            assert_eq!(
                traceparent, CHECKOUT_TRACE,
                "{id} keeps its checkout's trace"
            );
            id
        })
        .collect()
}

#[tokio::test]
async fn orders_on_sqlite() {
    exercise(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn orders_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&database).await;
}

async fn exercise(database: &TestDatabase) {
    let db = Database::connect(&database.url).await.unwrap();
    db.migrate(&comb_orders::MIGRATIONS).await.unwrap();
    let store = OrderStore::new(db);

    let (first, created) = store
        .create(&order("o-1", "alice", "k-1", 1_000), 1_000, &placed("o-1"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first, order("o-1", "alice", "k-1", 1_000));
    let (again, created) = store
        .create(&order("o-2", "alice", "k-1", 2_000), 2_000, &placed("o-2"))
        .await
        .unwrap();
    assert!(
        !created,
        "the same key from the same owner is the same order"
    );
    assert_eq!(again.id, "o-1");
    let (bobs, created) = store
        .create(&order("o-3", "bob", "k-1", 3_000), 3_000, &placed("o-3"))
        .await
        .unwrap();
    assert!(created && bobs.id == "o-3", "keys are per owner");

    let mut next = first.clone();
    next.step = Step::Authorize;
    assert!(
        store
            .advance(&next, Step::Reserve, 4_000, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance(&next, Step::Reserve, 4_000, None)
            .await
            .unwrap(),
        "a second driver cannot repeat the move"
    );
    let cancellation = Event::new(
        "orders",
        "comb.order.cancelled",
        "o-1",
        &serde_json::json!({"order_id": "o-1"}),
    )
    .unwrap();
    let mut cancelled = next.clone();
    cancelled.status = OrderStatus::Cancelled;
    cancelled.cancel_reason = "payment_failed".into();
    cancelled.step = Step::Compensate;
    cancelled.release_pending = true;
    cancelled.void_pending = true;
    assert!(
        store
            .advance(&cancelled, Step::Authorize, 5_000, Some(&cancellation))
            .await
            .unwrap()
    );
    assert_eq!(store.get("o-1").await.unwrap().unwrap(), cancelled);

    assert_eq!(unfinished(&store, 10_000).await, ["o-1", "o-3"]);
    assert_eq!(
        unfinished(&store, 4_000).await,
        ["o-3"],
        "o-1 moved at 5000: not idle since 4000"
    );
    store.touch("o-3", 9_000).await.unwrap();
    assert_eq!(
        unfinished(&store, 8_000).await,
        ["o-1"],
        "a touched saga is not idle"
    );
    let mut done = cancelled.clone();
    done.step = Step::Done;
    store
        .advance(&done, Step::Compensate, 11_000, None)
        .await
        .unwrap();
    assert_eq!(unfinished(&store, 20_000).await, ["o-3"]);

    // The event went out with the move that made it, and a refused move publishes nothing.
    assert!(
        !store
            .advance(&cancelled, Step::Authorize, 12_000, Some(&cancellation))
            .await
            .unwrap()
    );
    let outbox = events::read_outbox(store.database(), "orders", 0, 10)
        .await
        .unwrap();
    let kinds: Vec<&str> = outbox.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "comb.order.placed",
            "comb.order.placed",
            "comb.order.cancelled"
        ],
        "placed once per new order (not for a repeated key), cancelled once"
    );
    assert_eq!(outbox[2].id, cancellation.id);

    let alices = store.list("alice", 10).await.unwrap();
    assert_eq!(alices.len(), 1);
    assert!(store.list("carol", 10).await.unwrap().is_empty());
}
