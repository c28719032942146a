//! The cart service over gRPC with a real catalog, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use comb_contracts::cart::v1 as proto;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_contracts::catalog::v1 as catalog;
use comb_kit::ServiceConfig;
use comb_testkit::{TestDatabase, TestServer};
use tonic::Code;
use tonic::transport::Channel;

struct Setup {
    client: CartClient<Channel>,
    catalog: TestServer,
    products: Vec<catalog::Product>,
    _cart: TestServer,
    _catalog_db: TestDatabase,
}

async fn setup(database: &TestDatabase) -> Setup {
    let catalog_db = TestDatabase::sqlite();
    let catalog_config = ServiceConfig::resolve(
        "catalog",
        BTreeMap::new(),
        [("COMB_DATABASE_URL", catalog_db.url.clone())],
    )
    .unwrap();
    let store = comb_catalog::open_store(&catalog_config).await.unwrap();
    let products = store
        .list(&comb_catalog::domain::ListFilter {
            kind: None,
            category: None,
            limit: 3,
            after: None,
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(comb_catalog::api::product_to_proto)
        .collect();
    let catalog = TestServer::start(comb_catalog::routes(store)).await;
    let env = [
        ("COMB_DATABASE_URL", database.url.clone()),
        ("COMB_UPSTREAM_CATALOG", catalog.url()),
    ];
    let config = ServiceConfig::resolve("cart", BTreeMap::new(), env).unwrap();
    let cart = TestServer::start(comb_cart::routes(comb_cart::open(&config).await.unwrap())).await;
    let channel = tonic::transport::Endpoint::from_shared(cart.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Setup {
        client: CartClient::new(channel),
        catalog,
        products,
        _cart: cart,
        _catalog_db: catalog_db,
    }
}

fn add(owner: &str, product_id: &str, quantity: i64) -> proto::AddItemRequest {
    proto::AddItemRequest {
        owner: owner.into(),
        product_id: product_id.into(),
        quantity,
    }
}

fn quantities(view: &proto::CartView) -> Vec<(String, i64)> {
    view.lines
        .iter()
        .map(|line| (line.product_id.clone(), line.quantity))
        .collect()
}

#[tokio::test]
async fn carts_on_sqlite() {
    exercise(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn carts_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&database).await;
}

async fn exercise(database: &TestDatabase) {
    let mut setup = setup(database).await;
    let (a, b) = (setup.products[0].clone(), setup.products[1].clone());
    let client = &mut setup.client;

    client.add_item(add("user-1", &a.id, 2)).await.unwrap();
    let view = client
        .add_item(add("user-1", &b.id, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quantities(&view), [(a.id.clone(), 2), (b.id.clone(), 1)]);
    let price = |p: &catalog::Product| p.price.clone().unwrap().amount_minor;
    let line = &view.lines[0];
    assert_eq!(
        (line.sku.as_str(), line.title.as_str()),
        (a.sku.as_str(), a.title.as_str())
    );
    assert_eq!(line.unit_price.clone().unwrap().amount_minor, price(&a));
    assert_eq!(line.line_total.clone().unwrap().amount_minor, 2 * price(&a));
    assert_eq!(
        view.total.clone().unwrap().amount_minor,
        2 * price(&a) + price(&b)
    );

    let view = client
        .add_item(add("user-1", &a.id, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.lines[0].quantity, 5, "adding adds");
    let set = |quantity| proto::SetQuantityRequest {
        owner: "user-1".into(),
        product_id: a.id.clone(),
        quantity,
    };
    assert_eq!(
        client
            .set_quantity(set(1))
            .await
            .unwrap()
            .into_inner()
            .lines[0]
            .quantity,
        1
    );
    let view = client.set_quantity(set(0)).await.unwrap().into_inner();
    assert_eq!(quantities(&view), [(b.id.clone(), 1)], "0 removes");

    // Refusals name the field.
    let field = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument);
        comb_kit::grpc::field_errors(&status).unwrap()[0]
            .field
            .clone()
    };
    let unknown = "00000000-0000-7000-8000-000000000000";
    assert_eq!(
        field(
            client
                .add_item(add("user-1", unknown, 1))
                .await
                .unwrap_err()
        ),
        "product_id"
    );
    assert_eq!(
        field(client.add_item(add("user-1", "x", 1)).await.unwrap_err()),
        "product_id"
    );
    assert_eq!(
        field(client.add_item(add("user-1", &a.id, 0)).await.unwrap_err()),
        "quantity"
    );
    assert_eq!(
        field(
            client
                .add_item(add("user-1", &a.id, 100))
                .await
                .unwrap_err()
        ),
        "quantity"
    );
    client.add_item(add("user-1", &b.id, 90)).await.unwrap();
    let status = client.add_item(add("user-1", &b.id, 9)).await.unwrap_err();
    assert!(
        status.message().contains("at most 99"),
        "{}",
        status.message()
    );
    assert_eq!(
        field(client.add_item(add("", &a.id, 1)).await.unwrap_err()),
        "owner"
    );

    // A guest's cart merges into the account's.
    client.add_item(add("guest-9", &b.id, 5)).await.unwrap();
    client.add_item(add("guest-9", &a.id, 1)).await.unwrap();
    let merged = client
        .merge(proto::MergeRequest {
            from_owner: "guest-9".into(),
            to_owner: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quantities(&merged), [(b.id.clone(), 96), (a.id.clone(), 1)]);
    let guest = client
        .get_cart(proto::GetCartRequest {
            owner: "guest-9".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(guest.lines.is_empty(), "the guest's cart is emptied");

    let cleared = client
        .clear(proto::ClearRequest {
            owner: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.lines.is_empty());
    assert_eq!(cleared.total.unwrap().amount_minor, 0);

    client.add_item(add("user-2", &a.id, 1)).await.unwrap();
    setup.catalog.stop().await;
    let down = setup
        .client
        .get_cart(proto::GetCartRequest {
            owner: "user-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
}
