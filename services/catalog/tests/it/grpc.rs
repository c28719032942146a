use comb_contracts::catalog::v1 as proto;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_testkit::{TestDatabase, TestServer};
use tonic::Code;

use crate::seeded_store;

type Connected = (
    CatalogClient<tonic::transport::Channel>,
    TestServer,
    TestDatabase,
);

async fn client() -> Connected {
    client_on(TestDatabase::sqlite()).await
}

async fn client_on(database: TestDatabase) -> Connected {
    let store = seeded_store(&database).await;
    let server = TestServer::start(comb_catalog::routes(store)).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = CatalogClient::new(channel);
    (client, server, database)
}

#[tokio::test]
async fn grpc_lists_gets_and_pages() {
    let (mut client, _server, _db) = client().await;
    let first = client
        .list_products(proto::ListProductsRequest {
            kind: proto::ProductKind::Music as i32,
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.items.len(), 5);
    assert!(
        first
            .items
            .iter()
            .all(|p| p.kind == proto::ProductKind::Music as i32)
    );
    assert!(!first.next_cursor.is_empty());
    let second = client
        .list_products(proto::ListProductsRequest {
            kind: proto::ProductKind::Music as i32,
            limit: 5,
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(second.items[0].id > first.items[4].id);
    let one = client
        .get_product(proto::GetProductRequest {
            id: first.items[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one, first.items[0]);
    assert_eq!(one.price.as_ref().map(|m| m.currency.as_str()), Some("USD"));
}

#[tokio::test]
async fn grpc_refuses_bad_input_with_the_field_named() {
    refuses_bad_input(client().await).await;
}

#[tokio::test]
async fn grpc_refuses_bad_input_on_postgres_too() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    refuses_bad_input(client_on(database).await).await;
}

async fn refuses_bad_input((mut client, _server, _db): Connected) {
    let status = client
        .list_products(proto::ListProductsRequest {
            limit: 1000,
            cursor: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("limit: must be between 1 and 100"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("cursor:"), "{}", status.message());
    for id in ["nope", "\0", "01a206fe-d5a1-762a-b4c4-5d99d624\x006c2", ""] {
        let status = client
            .get_product(proto::GetProductRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id:?}: {status:?}");
    }
    let status = client
        .list_products(proto::ListProductsRequest {
            category: "ja\0zz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let found = client
        .search_products(proto::SearchProductsRequest {
            query: "nul\0byte".into(),
            limit: 5,
        })
        .await;
    assert!(
        found.is_ok(),
        "a NUL byte in a search is only a separator: {found:?}"
    );
    let status = client
        .search_products(proto::SearchProductsRequest {
            query: "x".repeat(10_000),
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("q:"), "{}", status.message());
}

#[tokio::test]
async fn grpc_admin_creates_and_updates() {
    let (mut client, _server, _db) = client().await;
    let draft = proto::ProductDraft {
        sku: "VD-9000".into(),
        kind: proto::ProductKind::Video as i32,
        title: "Test Pattern".into(),
        creators: vec!["A. Director".into()],
        description: "Colour bars for ninety minutes.".into(),
        category: "documentaries".into(),
        tags: vec!["test".into()],
        price: Some(proto::Money {
            amount_minor: 999,
            currency: "USD".into(),
        }),
    };
    let created = client
        .create_product(proto::CreateProductRequest {
            product: Some(draft.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.title, "Test Pattern");
    let duplicate = client
        .create_product(proto::CreateProductRequest {
            product: Some(draft.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let mut changed = draft.clone();
    changed.price = Some(proto::Money {
        amount_minor: 1499,
        currency: "USD".into(),
    });
    let updated = client
        .update_product(proto::UpdateProductRequest {
            id: created.id.clone(),
            product: Some(changed),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.price.map(|m| m.amount_minor), Some(1499));

    let mut invalid = draft;
    invalid.kind = 0;
    invalid.title = String::new();
    let status = client
        .create_product(proto::CreateProductRequest {
            product: Some(invalid),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("kind:") && status.message().contains("title:"),
        "{}",
        status.message()
    );
}
