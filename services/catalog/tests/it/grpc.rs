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
            ..Default::default()
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
            ..Default::default()
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

fn page_of_books() -> proto::ListProductsRequest {
    proto::ListProductsRequest {
        kind: proto::ProductKind::Book as i32,
        limit: 3,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_caller_holding_the_current_answer_is_told_it_is_not_modified() {
    let (mut client, _server, _db) = client().await;
    let first = client
        .list_products(page_of_books())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(first.version, 0);
    assert!(!first.not_modified);
    let again = client
        .list_products(proto::ListProductsRequest {
            if_version: first.version,
            ..page_of_books()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.not_modified, "{again:?}");
    assert!(again.items.is_empty());
    assert_eq!(again.version, first.version);
    let stale = client
        .list_products(proto::ListProductsRequest {
            if_version: first.version ^ 1,
            ..page_of_books()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stale.not_modified);
    assert_eq!(stale.items, first.items);
    let categories = client
        .list_categories(proto::ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let unchanged = client
        .list_categories(proto::ListCategoriesRequest {
            if_version: categories.version,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unchanged.not_modified && unchanged.items.is_empty());
}

#[tokio::test]
async fn a_write_is_read_back_at_once_and_changes_the_version() {
    let (mut client, _server, _db) = client().await;
    let before = client
        .list_products(page_of_books())
        .await
        .unwrap()
        .into_inner();
    let product = before.items[0].clone();
    // Read through the cache first, so a stale entry would show.
    let cached = client
        .get_product(proto::GetProductRequest {
            id: product.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cached.title, product.title);
    let mut draft = proto::ProductDraft {
        sku: product.sku.clone(),
        kind: product.kind,
        title: format!("{} (revised)", product.title),
        creators: product.creators.clone(),
        description: product.description.clone(),
        category: product.category.clone(),
        tags: product.tags.clone(),
        price: product.price.clone(),
    };
    if let Some(price) = draft.price.as_mut() {
        price.amount_minor += 100;
    }
    client
        .update_product(proto::UpdateProductRequest {
            id: product.id.clone(),
            product: Some(draft),
        })
        .await
        .unwrap();
    let read = client
        .get_product(proto::GetProductRequest {
            id: product.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.title.ends_with("(revised)"), "{read:?}");
    let after = client
        .list_products(proto::ListProductsRequest {
            if_version: before.version,
            ..page_of_books()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!after.not_modified, "the write moved the version on");
    assert_ne!(after.version, before.version);
    assert!(after.items[0].title.ends_with("(revised)"));
}

#[tokio::test]
async fn a_write_by_another_instance_reaches_this_ones_cache() {
    let database = TestDatabase::sqlite();
    let store = seeded_store(&database).await;
    let server = TestServer::start(comb_catalog::routes(store)).await;
    let mut reader = CatalogClient::new(
        tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    // A second instance on the same database, as `comb scale catalog=2` runs it.
    let other = comb_catalog::store::CatalogStore::new(
        comb_kit::storage::Database::connect(&database.url)
            .await
            .unwrap(),
    );
    let before = reader
        .list_products(page_of_books())
        .await
        .unwrap()
        .into_inner();
    let product = &before.items[0];
    let draft = comb_catalog::domain::ProductDraft::parse(comb_catalog::domain::ProductInput {
        sku: product.sku.clone(),
        kind: "book".into(),
        title: "Written elsewhere".into(),
        creators: product.creators.clone(),
        description: product.description.clone(),
        category: product.category.clone(),
        tags: product.tags.clone(),
        price: comb_catalog::domain::Money {
            amount_minor: 1234,
            currency: "USD".into(),
        },
    })
    .unwrap();
    other.update(&product.id, &draft).await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let page = reader
            .list_products(page_of_books())
            .await
            .unwrap()
            .into_inner();
        if page.items[0].title == "Written elsewhere" {
            assert_ne!(page.version, before.version);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other instance's write never reached this one's cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
