//! The catalog's gRPC API, on the service as `comb serve` builds it over a seeded
//! database: listing by kind and page, getting products, refusals (NUL bytes included,
//! which PostgreSQL would not store), admin writes, answers a caller already holds, and
//! writes seen at once by the instance that made them and soon by another one.

use std::time::Duration;

use comb_contracts::catalog::v1 as proto;
use comb_testkit::TestDatabase;
use tonic::Code;

use crate::{Catalog, start};

fn music(limit: u32, cursor: &str) -> proto::ListProductsRequest {
    proto::ListProductsRequest {
        kind: proto::ProductKind::Music as i32,
        limit,
        cursor: cursor.into(),
        ..Default::default()
    }
}

fn page_of_books() -> proto::ListProductsRequest {
    proto::ListProductsRequest {
        kind: proto::ProductKind::Book as i32,
        limit: 3,
        ..Default::default()
    }
}

fn test_pattern() -> proto::ProductDraft {
    proto::ProductDraft {
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
    }
}

/// `product` as a draft, its title revised and its price up by one dollar.
fn revised(product: &proto::Product) -> proto::ProductDraft {
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
    draft
}

impl Catalog {
    async fn list(&mut self, request: proto::ListProductsRequest) -> proto::ListProductsResponse {
        self.client
            .list_products(request)
            .await
            .unwrap()
            .into_inner()
    }

    async fn get(&mut self, id: &str) -> Result<proto::Product, tonic::Status> {
        self.client
            .get_product(proto::GetProductRequest { id: id.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn create(
        &mut self,
        draft: proto::ProductDraft,
    ) -> Result<proto::Product, tonic::Status> {
        self.client
            .create_product(proto::CreateProductRequest {
                product: Some(draft),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn update(&mut self, id: &str, draft: proto::ProductDraft) -> proto::Product {
        self.client
            .update_product(proto::UpdateProductRequest {
                id: id.into(),
                product: Some(draft),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

async fn products_are_listed_by_kind(database: TestDatabase) {
    let mut catalog = start(&database).await;

    let page = catalog.list(music(5, "")).await;

    assert_eq!(page.items.len(), 5);
    assert!(
        page.items
            .iter()
            .all(|p| p.kind == proto::ProductKind::Music as i32)
    );
}

async fn a_list_goes_on_from_its_cursor(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let first = catalog.list(music(5, "")).await;
    assert!(!first.next_cursor.is_empty());

    let second = catalog.list(music(5, &first.next_cursor)).await;

    assert!(second.items[0].id > first.items[4].id);
}

async fn a_product_is_got_as_listed_priced_in_dollars(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let listed = catalog.list(music(5, "")).await.items[0].clone();

    let one = catalog.get(&listed.id).await.unwrap();

    assert_eq!(one, listed);
    assert_eq!(one.price.as_ref().map(|m| m.currency.as_str()), Some("USD"));
}

async fn a_bad_list_request_is_refused_naming_limit_and_cursor(database: TestDatabase) {
    let mut catalog = start(&database).await;

    let status = catalog
        .client
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
}

async fn a_malformed_or_unknown_product_id_is_not_found(database: TestDatabase) {
    let mut catalog = start(&database).await;

    for id in ["nope", "\0", "01a206fe-d5a1-762a-b4c4-5d99d624\x006c2", ""] {
        let status = catalog.get(id).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id:?}: {status:?}");
    }
}

async fn a_category_holding_a_nul_byte_is_refused(database: TestDatabase) {
    let mut catalog = start(&database).await;

    let status = catalog
        .client
        .list_products(proto::ListProductsRequest {
            category: "ja\0zz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn a_nul_byte_in_a_search_only_separates_words(database: TestDatabase) {
    let mut catalog = start(&database).await;

    let found = catalog
        .client
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
}

async fn an_overlong_search_is_refused_naming_q(database: TestDatabase) {
    let mut catalog = start(&database).await;

    let status = catalog
        .client
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

async fn an_admin_creates_a_product(database: TestDatabase) {
    let mut catalog = start(&database).await;

    let created = catalog.create(test_pattern()).await.unwrap();

    assert_eq!(created.title, "Test Pattern");
}

async fn a_product_with_a_taken_sku_is_refused(database: TestDatabase) {
    let mut catalog = start(&database).await;
    catalog.create(test_pattern()).await.unwrap();

    let duplicate = catalog.create(test_pattern()).await.unwrap_err();

    assert_eq!(duplicate.code(), Code::AlreadyExists);
}

async fn an_admin_changes_a_products_price(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let created = catalog.create(test_pattern()).await.unwrap();
    let mut changed = test_pattern();
    changed.price = Some(proto::Money {
        amount_minor: 1499,
        currency: "USD".into(),
    });

    let updated = catalog.update(&created.id, changed).await;

    assert_eq!(updated.price.map(|m| m.amount_minor), Some(1499));
}

async fn a_bad_product_is_refused_naming_kind_and_title(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let mut invalid = test_pattern();
    invalid.kind = 0;
    invalid.title = String::new();

    let status = catalog.create(invalid).await.unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("kind:") && status.message().contains("title:"),
        "{}",
        status.message()
    );
}

async fn a_caller_holding_the_current_list_is_told_it_is_not_modified(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let first = catalog.list(page_of_books()).await;
    assert_ne!(first.version, 0);
    assert!(!first.not_modified);

    let again = catalog
        .list(proto::ListProductsRequest {
            if_version: first.version,
            ..page_of_books()
        })
        .await;

    assert!(again.not_modified, "{again:?}");
    assert!(again.items.is_empty());
    assert_eq!(again.version, first.version);
}

async fn a_caller_holding_another_version_gets_the_list(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let first = catalog.list(page_of_books()).await;

    let stale = catalog
        .list(proto::ListProductsRequest {
            if_version: first.version ^ 1,
            ..page_of_books()
        })
        .await;

    assert!(!stale.not_modified);
    assert_eq!(stale.items, first.items);
}

async fn a_caller_holding_the_current_categories_is_told_they_are_not_modified(
    database: TestDatabase,
) {
    let mut catalog = start(&database).await;
    let categories = catalog
        .client
        .list_categories(proto::ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner();

    let unchanged = catalog
        .client
        .list_categories(proto::ListCategoriesRequest {
            if_version: categories.version,
        })
        .await
        .unwrap()
        .into_inner();

    assert!(unchanged.not_modified && unchanged.items.is_empty());
}

async fn a_write_is_read_back_at_once(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let product = catalog.list(page_of_books()).await.items[0].clone();
    // Read through the cache first, so a stale entry would show.
    let cached = catalog.get(&product.id).await.unwrap();
    assert_eq!(cached.title, product.title);

    catalog.update(&product.id, revised(&product)).await;

    let read = catalog.get(&product.id).await.unwrap();
    assert!(read.title.ends_with("(revised)"), "{read:?}");
}

async fn a_write_moves_the_version_on(database: TestDatabase) {
    let mut catalog = start(&database).await;
    let before = catalog.list(page_of_books()).await;
    let product = before.items[0].clone();

    catalog.update(&product.id, revised(&product)).await;

    let after = catalog
        .list(proto::ListProductsRequest {
            if_version: before.version,
            ..page_of_books()
        })
        .await;
    assert!(!after.not_modified, "the write moved the version on");
    assert_ne!(after.version, before.version);
    assert!(after.items[0].title.ends_with("(revised)"));
}

async fn a_write_by_another_instance_reaches_this_ones_cache(database: TestDatabase) {
    let mut reader = start(&database).await;
    // A second instance on the same database, as `comb scale catalog=2` runs it.
    let mut writer = start(&database).await;
    let before = reader.list(page_of_books()).await;
    let product = before.items[0].clone();
    let mut draft = revised(&product);
    draft.title = "Written elsewhere".into();

    writer.update(&product.id, draft).await;

    // The reader learns of the write when it next polls the data version.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = reader.list(page_of_books()).await;
        if page.items[0].title == "Written elsewhere" {
            assert_ne!(page.version, before.version);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other instance's write never reached this one's cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

comb_testkit::on_each_backend!(
    products_are_listed_by_kind,
    a_list_goes_on_from_its_cursor,
    a_product_is_got_as_listed_priced_in_dollars,
    a_bad_list_request_is_refused_naming_limit_and_cursor,
    a_malformed_or_unknown_product_id_is_not_found,
    a_category_holding_a_nul_byte_is_refused,
    a_nul_byte_in_a_search_only_separates_words,
    an_overlong_search_is_refused_naming_q,
    an_admin_creates_a_product,
    a_product_with_a_taken_sku_is_refused,
    an_admin_changes_a_products_price,
    a_bad_product_is_refused_naming_kind_and_title,
    a_caller_holding_the_current_list_is_told_it_is_not_modified,
    a_caller_holding_another_version_gets_the_list,
    a_caller_holding_the_current_categories_is_told_they_are_not_modified,
    a_write_is_read_back_at_once,
    a_write_moves_the_version_on,
    a_write_by_another_instance_reaches_this_ones_cache,
);
