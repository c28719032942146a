//! The orders store, opened as the service opens it, on SQLite and PostgreSQL: idempotent
//! creation per owner and key, saga moves that only one driver can make, the search for
//! unfinished sagas (idle since a given time, keeping their checkout's trace), the events
//! that go out with the moves that make them, and order history per owner. Times are
//! passed in, so nothing waits for the clock.

#![allow(clippy::unwrap_used)]

use comb_kit::events::{self, Event};
use comb_kit::storage::Database;
use comb_orders::store::{Address, Line, Order, OrderStatus, OrderStore, Step};
use comb_testkit::TestDatabase;

/// The trace context of the checkout that placed every order here.
const CHECKOUT_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn store_over(database: &TestDatabase) -> OrderStore {
    let db = Database::open(&database.url, &comb_orders::MIGRATIONS)
        .await
        .unwrap();
    OrderStore::new(db)
}

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
            digital: false,
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

fn cancellation() -> Event {
    Event::new(
        "orders",
        "comb.order.cancelled",
        "o-1",
        &serde_json::json!({"order_id": "o-1"}),
    )
    .unwrap()
}

/// Creates `order` at its creation time, announcing it as placed; whether it was new.
async fn create(store: &OrderStore, order: &Order) -> (Order, bool) {
    store
        .create(order, order.created_at_ms, &placed(&order.id))
        .await
        .unwrap()
}

/// Alice's order o-1 placed at 1000 and Bob's o-3 at 3000, both with key k-1.
async fn alices_and_bobs_orders(store: &OrderStore) -> Order {
    let (first, _) = create(store, &order("o-1", "alice", "k-1", 1_000)).await;
    create(store, &order("o-3", "bob", "k-1", 3_000)).await;
    first
}

/// o-1 moved to Authorize at 4000, then cancelled (with `cancellation`) at 5000, its
/// stock and payment left to give back.
async fn cancel_alices_order(store: &OrderStore, first: &Order, cancellation: &Event) -> Order {
    let mut next = first.clone();
    next.step = Step::Authorize;
    assert!(
        store
            .advance(&next, Step::Reserve, 4_000, None)
            .await
            .unwrap()
    );
    let mut cancelled = next;
    cancelled.status = OrderStatus::Cancelled;
    cancelled.cancel_reason = "payment_failed".into();
    cancelled.step = Step::Compensate;
    cancelled.release_pending = true;
    cancelled.void_pending = true;
    assert!(
        store
            .advance(&cancelled, Step::Authorize, 5_000, Some(cancellation))
            .await
            .unwrap()
    );
    cancelled
}

/// The ids of the unfinished sagas idle since `idle_since_ms`; each must carry its
/// checkout's trace context.
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

async fn published(store: &OrderStore) -> Vec<Event> {
    events::read_outbox(store.database(), "orders", 0, 10)
        .await
        .unwrap()
}

async fn a_new_order_is_stored_as_given(database: TestDatabase) {
    let store = store_over(&database).await;

    let (first, created) = create(&store, &order("o-1", "alice", "k-1", 1_000)).await;

    assert!(created);
    assert_eq!(first, order("o-1", "alice", "k-1", 1_000));
}

async fn the_same_key_from_the_same_owner_is_the_same_order(database: TestDatabase) {
    let store = store_over(&database).await;
    create(&store, &order("o-1", "alice", "k-1", 1_000)).await;

    let (again, created) = create(&store, &order("o-2", "alice", "k-1", 2_000)).await;

    assert!(
        !created,
        "the same key from the same owner is the same order"
    );
    assert_eq!(again.id, "o-1");
}

async fn idempotency_keys_are_per_owner(database: TestDatabase) {
    let store = store_over(&database).await;
    create(&store, &order("o-1", "alice", "k-1", 1_000)).await;

    let (bobs, created) = create(&store, &order("o-3", "bob", "k-1", 3_000)).await;

    assert!(created && bobs.id == "o-3", "keys are per owner");
}

async fn a_saga_move_is_made_by_one_driver_only(database: TestDatabase) {
    let store = store_over(&database).await;
    let (first, _) = create(&store, &order("o-1", "alice", "k-1", 1_000)).await;
    let mut next = first;
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
}

async fn a_saga_move_stores_the_whole_order(database: TestDatabase) {
    let store = store_over(&database).await;
    let first = alices_and_bobs_orders(&store).await;

    let cancelled = cancel_alices_order(&store, &first, &cancellation()).await;

    assert_eq!(store.get("o-1").await.unwrap().unwrap(), cancelled);
}

async fn unfinished_sagas_are_those_not_moved_since_the_given_time(database: TestDatabase) {
    let store = store_over(&database).await;
    let first = alices_and_bobs_orders(&store).await;
    cancel_alices_order(&store, &first, &cancellation()).await;

    assert_eq!(unfinished(&store, 10_000).await, ["o-1", "o-3"]);
    assert_eq!(
        unfinished(&store, 4_000).await,
        ["o-3"],
        "o-1 moved at 5000: not idle since 4000"
    );
}

async fn an_unfinished_saga_keeps_its_checkouts_trace(database: TestDatabase) {
    let store = store_over(&database).await;
    alices_and_bobs_orders(&store).await;

    let found = store.unfinished(10_000).await.unwrap();

    assert_eq!(found.len(), 2);
    assert!(
        found
            .iter()
            .all(|(_, traceparent)| traceparent == CHECKOUT_TRACE),
        "{found:?}"
    );
}

async fn a_touched_saga_is_not_idle(database: TestDatabase) {
    let store = store_over(&database).await;
    let first = alices_and_bobs_orders(&store).await;
    cancel_alices_order(&store, &first, &cancellation()).await;

    store.touch("o-3", 9_000).await.unwrap();

    assert_eq!(
        unfinished(&store, 8_000).await,
        ["o-1"],
        "a touched saga is not idle"
    );
}

async fn a_finished_saga_is_no_longer_unfinished(database: TestDatabase) {
    let store = store_over(&database).await;
    let first = alices_and_bobs_orders(&store).await;
    let cancelled = cancel_alices_order(&store, &first, &cancellation()).await;
    let mut done = cancelled;
    done.step = Step::Done;

    store
        .advance(&done, Step::Compensate, 11_000, None)
        .await
        .unwrap();

    assert_eq!(unfinished(&store, 20_000).await, ["o-3"]);
}

async fn a_new_order_is_announced_as_placed_and_a_repeated_key_is_not(database: TestDatabase) {
    let store = store_over(&database).await;
    create(&store, &order("o-1", "alice", "k-1", 1_000)).await;
    create(&store, &order("o-2", "alice", "k-1", 2_000)).await;
    create(&store, &order("o-3", "bob", "k-1", 3_000)).await;

    let outbox = published(&store).await;

    let subjects: Vec<(&str, &str)> = outbox
        .iter()
        .map(|event| (event.kind.as_str(), event.subject.as_str()))
        .collect();
    assert_eq!(
        subjects,
        [("comb.order.placed", "o-1"), ("comb.order.placed", "o-3")],
        "placed once per new order (not for a repeated key)"
    );
}

async fn a_moves_event_goes_out_with_it_once_and_a_refused_move_publishes_nothing(
    database: TestDatabase,
) {
    let store = store_over(&database).await;
    let first = alices_and_bobs_orders(&store).await;
    let cancellation = cancellation();
    let cancelled = cancel_alices_order(&store, &first, &cancellation).await;

    assert!(
        !store
            .advance(&cancelled, Step::Authorize, 12_000, Some(&cancellation))
            .await
            .unwrap()
    );

    let outbox = published(&store).await;
    let kinds: Vec<&str> = outbox.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "comb.order.placed",
            "comb.order.placed",
            "comb.order.cancelled"
        ],
        "cancelled once"
    );
    assert_eq!(outbox[2].id, cancellation.id);
}

async fn an_owners_history_holds_their_orders_only(database: TestDatabase) {
    let store = store_over(&database).await;
    alices_and_bobs_orders(&store).await;
    create(&store, &order("o-2", "alice", "k-1", 2_000)).await;

    let alices = store.list("alice", 10).await.unwrap();

    assert_eq!(
        alices
            .iter()
            .map(|order| order.id.as_str())
            .collect::<Vec<_>>(),
        ["o-1"]
    );
    assert!(store.list("carol", 10).await.unwrap().is_empty());
}

comb_testkit::on_each_backend!(
    a_new_order_is_stored_as_given,
    the_same_key_from_the_same_owner_is_the_same_order,
    idempotency_keys_are_per_owner,
    a_saga_move_is_made_by_one_driver_only,
    a_saga_move_stores_the_whole_order,
    unfinished_sagas_are_those_not_moved_since_the_given_time,
    an_unfinished_saga_keeps_its_checkouts_trace,
    a_touched_saga_is_not_idle,
    a_finished_saga_is_no_longer_unfinished,
    a_new_order_is_announced_as_placed_and_a_repeated_key_is_not,
    a_moves_event_goes_out_with_it_once_and_a_refused_move_publishes_nothing,
    an_owners_history_holds_their_orders_only,
);
