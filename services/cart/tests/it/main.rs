//! The cart service as `comb serve` builds it, calling a catalog built the same way: lines
//! priced from the catalog, quantities added, set and removed, refusals naming the field at
//! fault, a guest's cart merged into an account's, carts cleared, and the catalog's absence
//! reported. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use comb_contracts::cart::v1 as proto;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_contracts::catalog::v1 as catalog;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_testkit::{TestDatabase, TestService};
use tonic::Code;
use tonic::transport::Channel;

struct Setup {
    client: CartClient<Channel>,
    catalog: TestService,
    /// Two products of the catalog, the one with the smaller id first: lines added at the
    /// same millisecond are listed by product id, so listings come out in a known order.
    a: catalog::Product,
    b: catalog::Product,
    _cart: TestService,
    _catalog_db: TestDatabase,
}

async fn setup(database: &TestDatabase) -> Setup {
    // The catalog is only the cart's source of prices here: its bundled seed on SQLite is
    // enough whichever backend the cart is tested on.
    let catalog_db = TestDatabase::sqlite();
    let catalog_config =
        comb_testkit::config("catalog", &[("COMB_DATABASE_URL", catalog_db.url.clone())]);
    let catalog = TestService::start(comb_catalog::build(catalog_config).await.unwrap()).await;
    let mut products = CatalogClient::new(catalog.channel().await)
        .list_products(catalog::ListProductsRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    products.sort_by(|x, y| x.id.cmp(&y.id));
    let [a, b] = <[catalog::Product; 2]>::try_from(products).unwrap();
    let config = comb_testkit::config(
        "cart",
        &[
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_UPSTREAM_CATALOG", catalog.url()),
        ],
    );
    let cart = TestService::start(comb_cart::build(config).await.unwrap()).await;
    Setup {
        client: CartClient::new(cart.channel().await),
        catalog,
        a,
        b,
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

fn set(owner: &str, product_id: &str, quantity: i64) -> proto::SetQuantityRequest {
    proto::SetQuantityRequest {
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

fn price(product: &catalog::Product) -> i64 {
    product.price.clone().unwrap().amount_minor
}

/// The one field an INVALID_ARGUMENT refusal names.
fn refused_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = comb_kit::grpc::field_errors(status).unwrap();
    assert_eq!(fields.len(), 1, "{fields:?}");
    fields[0].field.clone()
}

/// `owner`'s cart after adding `quantity` of `product_id`.
async fn added(
    client: &CartClient<Channel>,
    owner: &str,
    product_id: &str,
    quantity: i64,
) -> proto::CartView {
    client
        .clone()
        .add_item(add(owner, product_id, quantity))
        .await
        .unwrap()
        .into_inner()
}

/// `owner`'s cart after setting the line of `product_id` to `quantity`.
async fn set_to(
    client: &CartClient<Channel>,
    owner: &str,
    product_id: &str,
    quantity: i64,
) -> proto::CartView {
    client
        .clone()
        .set_quantity(set(owner, product_id, quantity))
        .await
        .unwrap()
        .into_inner()
}

async fn get_cart(client: &mut CartClient<Channel>, owner: &str) -> proto::CartView {
    client
        .get_cart(proto::GetCartRequest {
            owner: owner.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn each_line_is_priced_from_the_catalog(database: TestDatabase) {
    let cart = setup(&database).await;

    added(&cart.client, "user-1", &cart.a.id, 2).await;
    let view = added(&cart.client, "user-1", &cart.b.id, 1).await;

    assert_eq!(
        quantities(&view),
        [(cart.a.id.clone(), 2), (cart.b.id.clone(), 1)]
    );
    let line = &view.lines[0];
    assert_eq!(
        (line.sku.as_str(), line.title.as_str()),
        (cart.a.sku.as_str(), cart.a.title.as_str())
    );
    assert_eq!(
        line.unit_price.clone().unwrap().amount_minor,
        price(&cart.a)
    );
    assert_eq!(
        line.line_total.clone().unwrap().amount_minor,
        2 * price(&cart.a)
    );
    assert_eq!(
        view.total.clone().unwrap().amount_minor,
        2 * price(&cart.a) + price(&cart.b)
    );
}

async fn adding_a_product_already_in_the_cart_adds_to_its_quantity(database: TestDatabase) {
    let cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.a.id, 2).await;

    let view = added(&cart.client, "user-1", &cart.a.id, 3).await;

    assert_eq!(quantities(&view), [(cart.a.id, 5)], "adding adds");
}

async fn setting_a_quantity_replaces_it(database: TestDatabase) {
    let cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.a.id, 5).await;

    let view = set_to(&cart.client, "user-1", &cart.a.id, 1).await;

    assert_eq!(view.lines[0].quantity, 1);
}

async fn setting_a_quantity_of_zero_removes_the_line(database: TestDatabase) {
    let cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.a.id, 5).await;
    added(&cart.client, "user-1", &cart.b.id, 1).await;

    let view = set_to(&cart.client, "user-1", &cart.a.id, 0).await;

    assert_eq!(quantities(&view), [(cart.b.id, 1)], "0 removes");
}

async fn a_product_not_in_the_catalog_is_refused_naming_product_id(database: TestDatabase) {
    let mut cart = setup(&database).await;
    let unknown = "00000000-0000-7000-8000-000000000000";

    let refused = cart
        .client
        .add_item(add("user-1", unknown, 1))
        .await
        .unwrap_err();

    assert_eq!(refused_field(&refused), "product_id");
}

/// Malformed requests are refused before the database or the catalog is asked, so one
/// backend is enough.
#[tokio::test]
async fn malformed_requests_are_refused_naming_the_field() {
    let database = TestDatabase::sqlite();
    let mut cart = setup(&database).await;

    let not_an_id = cart
        .client
        .add_item(add("user-1", "x", 1))
        .await
        .unwrap_err();
    assert_eq!(refused_field(&not_an_id), "product_id");
    let none = cart
        .client
        .add_item(add("user-1", &cart.a.id, 0))
        .await
        .unwrap_err();
    assert_eq!(refused_field(&none), "quantity");
    let too_many = cart
        .client
        .add_item(add("user-1", &cart.a.id, 100))
        .await
        .unwrap_err();
    assert_eq!(refused_field(&too_many), "quantity");
    let no_owner = cart
        .client
        .add_item(add("", &cart.a.id, 1))
        .await
        .unwrap_err();
    assert_eq!(refused_field(&no_owner), "owner");
}

async fn a_line_holds_at_most_99(database: TestDatabase) {
    let mut cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.b.id, 1).await;
    added(&cart.client, "user-1", &cart.b.id, 90).await;

    let refused = cart
        .client
        .add_item(add("user-1", &cart.b.id, 9))
        .await
        .unwrap_err();

    assert_eq!(refused_field(&refused), "quantity");
    assert!(
        refused.message().contains("at most 99"),
        "{}",
        refused.message()
    );
    assert_eq!(
        quantities(&get_cart(&mut cart.client, "user-1").await),
        [(cart.b.id, 91)]
    );
}

async fn merging_adds_a_guests_lines_to_the_accounts(database: TestDatabase) {
    let mut cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.a.id, 91).await;
    added(&cart.client, "guest-9", &cart.a.id, 5).await;
    added(&cart.client, "guest-9", &cart.b.id, 1).await;

    let merged = cart
        .client
        .merge(proto::MergeRequest {
            from_owner: "guest-9".into(),
            to_owner: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(quantities(&merged), [(cart.a.id, 96), (cart.b.id, 1)]);
}

async fn merging_empties_the_guests_cart(database: TestDatabase) {
    let mut cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.a.id, 1).await;
    added(&cart.client, "guest-9", &cart.b.id, 5).await;

    cart.client
        .merge(proto::MergeRequest {
            from_owner: "guest-9".into(),
            to_owner: "user-1".into(),
        })
        .await
        .unwrap();

    let guest = get_cart(&mut cart.client, "guest-9").await;
    assert!(guest.lines.is_empty(), "the guest's cart is emptied");
}

async fn clearing_empties_the_cart_and_zeroes_its_total(database: TestDatabase) {
    let mut cart = setup(&database).await;
    added(&cart.client, "user-1", &cart.a.id, 2).await;
    added(&cart.client, "user-1", &cart.b.id, 1).await;

    let cleared = cart
        .client
        .clear(proto::ClearRequest {
            owner: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert!(cleared.lines.is_empty());
    assert_eq!(cleared.total.unwrap().amount_minor, 0);
}

async fn a_cart_cannot_be_read_while_the_catalog_is_down(database: TestDatabase) {
    let mut cart = setup(&database).await;
    added(&cart.client, "user-2", &cart.a.id, 1).await;

    cart.catalog.server.stop().await;
    let down = cart
        .client
        .get_cart(proto::GetCartRequest {
            owner: "user-2".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
}

comb_testkit::on_each_backend!(
    each_line_is_priced_from_the_catalog,
    adding_a_product_already_in_the_cart_adds_to_its_quantity,
    setting_a_quantity_replaces_it,
    setting_a_quantity_of_zero_removes_the_line,
    a_product_not_in_the_catalog_is_refused_naming_product_id,
    a_line_holds_at_most_99,
    merging_adds_a_guests_lines_to_the_accounts,
    merging_empties_the_guests_cart,
    clearing_empties_the_cart_and_zeroes_its_total,
    a_cart_cannot_be_read_while_the_catalog_is_down,
);
