//! The catalog store, opened and seeded as the service opens it: the seed loaded once,
//! pages, filters, full-text search, creating and updating products with their checks,
//! the events each change announces, and a reopening that changes nothing.

use comb_catalog::domain::{
    Cursor, ListFilter, Money, Product, ProductDraft, ProductKind, SearchQuery,
};
use comb_catalog::store::{CatalogStore, Seed, StoreError};
use comb_testkit::TestDatabase;

use crate::{seed_size, seeded_store};

/// Every product, read page by page.
async fn all_products(store: &CatalogStore) -> Vec<Product> {
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListFilter {
                kind: None,
                category: None,
                limit: 7,
                after,
            })
            .await
            .unwrap();
        items.extend(page.items);
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => return items,
        }
    }
}

fn filter(kind: Option<ProductKind>, category: Option<&str>) -> ListFilter {
    ListFilter {
        kind,
        category: category.map(str::to_owned),
        limit: 100,
        after: None,
    }
}

async fn search(store: &CatalogStore, query: &str, limit: u32) -> Vec<Product> {
    store
        .search(&SearchQuery::parse(query).unwrap(), limit)
        .await
        .unwrap()
}

fn titles(products: Vec<Product>) -> Vec<String> {
    products.into_iter().map(|p| p.draft.title).collect()
}

fn zanzibar_manual() -> ProductDraft {
    ProductDraft {
        sku: "BK-9999".into(),
        kind: ProductKind::Book,
        title: "The Zanzibar Test Manual".into(),
        creators: vec!["Quentin Tester".into()],
        description: "A book that exists only in tests.".into(),
        category: "non-fiction".into(),
        tags: vec!["testing".into()],
        price: Money {
            amount_minor: 4200,
            currency: "USD".into(),
        },
    }
}

/// The manual renamed and down to 39.00.
fn xylophone_manual() -> ProductDraft {
    let mut renamed = zanzibar_manual();
    renamed.title = "The Xylophone Test Manual".into();
    renamed.price.amount_minor = 3900;
    renamed
}

#[test]
fn the_bundled_seed_holds_at_least_60_products() {
    assert!(seed_size() >= 60, "at least 60 seed products");
}

async fn a_catalog_with_products_is_not_seeded_again(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let again = store
        .seed_if_empty(&Seed::bundled().unwrap())
        .await
        .unwrap();

    assert_eq!(again, 0, "a catalog with products is not seeded again");
}

async fn the_seed_fills_twelve_categories_covering_every_kind(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let categories = store.categories().await.unwrap();

    assert_eq!(categories.len(), 12);
    for kind in ProductKind::ALL {
        assert!(
            categories
                .iter()
                .any(|c| c.kind == kind && c.product_count > 0),
            "{kind}"
        );
    }
    let counted: u32 = categories.iter().map(|c| c.product_count).sum();
    assert_eq!(counted as usize, seed_size());
}

async fn pages_cover_every_product_once_in_id_order(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let items = all_products(&store).await;

    assert_eq!(items.len(), seed_size());
    let mut ids: Vec<&str> = items.iter().map(|p| p.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), seed_size(), "no product on two pages");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "pages are in id order");
}

async fn a_product_is_got_by_id_and_an_unknown_id_gets_none(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let first = all_products(&store).await.remove(0);

    assert_eq!(store.get(&first.id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(store.get("no-such-id").await.unwrap(), None);
}

async fn several_products_are_got_in_the_order_asked_leaving_unknown_ones_out(
    database: TestDatabase,
) {
    let store = seeded_store(&database).await;
    let items = all_products(&store).await;

    let batch = store
        .get_many(&[items[3].id.clone(), "nope".into(), items[1].id.clone()])
        .await
        .unwrap();

    assert_eq!(
        batch,
        vec![items[3].clone(), items[1].clone()],
        "asked order, unknown left out"
    );
}

async fn products_are_filtered_by_kind(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let videos = store
        .list(&filter(Some(ProductKind::Video), None))
        .await
        .unwrap();

    assert!(videos.items.len() >= 20);
    assert!(
        videos
            .items
            .iter()
            .all(|p| p.draft.kind == ProductKind::Video)
    );
}

async fn products_are_filtered_by_category(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let jazz = store.list(&filter(None, Some("jazz"))).await.unwrap();

    assert!(!jazz.items.is_empty());
    assert!(jazz.items.iter().all(|p| p.draft.category == "jazz"));
}

async fn a_cursor_past_the_end_gives_an_empty_last_page(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let past_the_end = store
        .list(&ListFilter {
            kind: None,
            category: None,
            limit: 10,
            after: Some(Cursor::after("ffffffff")),
        })
        .await
        .unwrap();

    assert!(past_the_end.items.is_empty() && past_the_end.next_cursor.is_none());
}

async fn search_puts_the_best_title_match_first(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let by_title = titles(search(&store, "pride prejudice", 10).await);

    assert_eq!(
        by_title.first().map(String::as_str),
        Some("Pride and Prejudice"),
        "{by_title:?}"
    );
}

async fn search_finds_by_creator(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let by_creator = search(&store, "austen", 10).await;

    assert!(
        by_creator
            .iter()
            .any(|p| p.draft.creators.iter().any(|c| c.contains("Austen")))
    );
}

async fn search_finds_by_the_start_of_a_word(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let by_prefix = titles(search(&store, "prid", 10).await);

    assert!(
        by_prefix.contains(&"Pride and Prejudice".to_owned()),
        "{by_prefix:?}"
    );
}

async fn search_finds_a_tag_across_kinds(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let by_tag = search(&store, "science-fiction", 50).await;

    assert!(
        by_tag.len() >= 2,
        "a tag shared across kinds finds several products"
    );
    let kinds: std::collections::HashSet<_> = by_tag.iter().map(|p| p.draft.kind).collect();
    assert!(kinds.len() >= 2, "search spans kinds: {kinds:?}");
}

async fn a_search_matching_nothing_finds_nothing(database: TestDatabase) {
    let store = seeded_store(&database).await;

    assert!(search(&store, "zzzqqqxxx", 10).await.is_empty());
}

async fn query_syntax_in_a_search_is_not_interpreted(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let hostile = store
        .search(&SearchQuery::parse("\" OR 1=1 -- NEAR( *").unwrap(), 10)
        .await;

    assert!(
        hostile.is_ok(),
        "query syntax in user input is not interpreted: {hostile:?}"
    );
}

async fn a_search_finds_at_most_its_limit(database: TestDatabase) {
    let store = seeded_store(&database).await;

    assert!(search(&store, "the", 2).await.len() <= 2);
}

async fn a_created_product_is_stored_as_drafted_and_found_by_search(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let created = store.create(&zanzibar_manual()).await.unwrap();

    assert_eq!(created.draft, zanzibar_manual());
    let found = search(&store, "zanzibar", 5).await;
    assert_eq!(
        found.first().map(|p| p.id.as_str()),
        Some(created.id.as_str())
    );
}

async fn a_taken_sku_cannot_be_created_again(database: TestDatabase) {
    let store = seeded_store(&database).await;
    store.create(&zanzibar_manual()).await.unwrap();

    let again = store.create(&zanzibar_manual()).await;

    assert!(
        matches!(again, Err(StoreError::DuplicateSku(_))),
        "{again:?}"
    );
}

async fn an_update_replaces_the_draft_and_keeps_the_creation_time(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let created = store.create(&zanzibar_manual()).await.unwrap();

    let updated = store
        .update(&created.id, &xylophone_manual())
        .await
        .unwrap()
        .unwrap();

    assert_eq!(updated.draft, xylophone_manual());
    assert_eq!(updated.created_at, created.created_at);
}

async fn search_follows_an_update(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let created = store.create(&zanzibar_manual()).await.unwrap();

    store
        .update(&created.id, &xylophone_manual())
        .await
        .unwrap()
        .unwrap();

    assert!(search(&store, "zanzibar", 5).await.is_empty());
    assert_eq!(search(&store, "xylophone", 5).await.len(), 1);
}

async fn updating_an_unknown_product_finds_nothing(database: TestDatabase) {
    let store = seeded_store(&database).await;

    let updated = store
        .update("no-such-id", &xylophone_manual())
        .await
        .unwrap();

    assert_eq!(updated, None);
}

async fn a_category_of_another_kind_is_refused(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let created = store.create(&zanzibar_manual()).await.unwrap();
    let mut wrong_kind = xylophone_manual();
    wrong_kind.kind = ProductKind::Music;

    let updated = store.update(&created.id, &wrong_kind).await;

    assert!(
        matches!(updated, Err(StoreError::CategoryKindMismatch { .. })),
        "{updated:?}"
    );
}

async fn an_unknown_category_is_refused(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let mut unknown = xylophone_manual();
    unknown.category = "poetry".into();

    let created = store.create(&unknown).await;

    assert!(
        matches!(created, Err(StoreError::UnknownCategory(_))),
        "{created:?}"
    );
}

async fn each_change_is_announced_and_refused_ones_are_not(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let created = store.create(&zanzibar_manual()).await.unwrap();
    store.create(&zanzibar_manual()).await.unwrap_err();
    store
        .update(&created.id, &xylophone_manual())
        .await
        .unwrap()
        .unwrap();
    store
        .update("no-such-id", &xylophone_manual())
        .await
        .unwrap();
    let mut wrong_kind = xylophone_manual();
    wrong_kind.kind = ProductKind::Music;
    store.update(&created.id, &wrong_kind).await.unwrap_err();
    let mut unknown = xylophone_manual();
    unknown.category = "poetry".into();
    store.create(&unknown).await.unwrap_err();

    let published = comb_kit::events::read_outbox(store.database(), "catalog", 0, 100)
        .await
        .unwrap();

    let seeded = Seed::bundled().unwrap().products.len();
    let kinds: Vec<&str> = published.iter().map(|event| event.kind.as_str()).collect();
    assert!(
        kinds[..seeded]
            .iter()
            .all(|kind| *kind == "comb.product.created"),
        "each seeded product is announced: {kinds:?}"
    );
    assert_eq!(
        kinds[seeded..],
        [
            "comb.product.created",
            "comb.product.updated",
            "comb.product.price_changed"
        ],
        "the refused update and create publish nothing"
    );
}

async fn a_price_change_is_announced_with_the_old_and_new_price(database: TestDatabase) {
    let store = seeded_store(&database).await;
    let created = store.create(&zanzibar_manual()).await.unwrap();

    store
        .update(&created.id, &xylophone_manual())
        .await
        .unwrap()
        .unwrap();

    let published = comb_kit::events::read_outbox(store.database(), "catalog", 0, 100)
        .await
        .unwrap();
    let price_changed = published
        .iter()
        .find(|event| event.kind == "comb.product.price_changed")
        .unwrap();
    let price: comb_contracts::events::PriceChanged = price_changed.data().unwrap();
    assert_eq!((price.old_price_minor, price.new_price_minor), (4200, 3900));
}

async fn reopening_the_store_migrates_nothing_new_and_seeds_nothing_twice(database: TestDatabase) {
    let store = seeded_store(&database).await;
    store.create(&zanzibar_manual()).await.unwrap();

    // As a restart opens it.
    let reopened = seeded_store(&database).await;

    assert_eq!(all_products(&reopened).await.len(), seed_size() + 1);
}

comb_testkit::on_each_backend!(
    a_catalog_with_products_is_not_seeded_again,
    the_seed_fills_twelve_categories_covering_every_kind,
    pages_cover_every_product_once_in_id_order,
    a_product_is_got_by_id_and_an_unknown_id_gets_none,
    several_products_are_got_in_the_order_asked_leaving_unknown_ones_out,
    products_are_filtered_by_kind,
    products_are_filtered_by_category,
    a_cursor_past_the_end_gives_an_empty_last_page,
    search_puts_the_best_title_match_first,
    search_finds_by_creator,
    search_finds_by_the_start_of_a_word,
    search_finds_a_tag_across_kinds,
    a_search_matching_nothing_finds_nothing,
    query_syntax_in_a_search_is_not_interpreted,
    a_search_finds_at_most_its_limit,
    a_created_product_is_stored_as_drafted_and_found_by_search,
    a_taken_sku_cannot_be_created_again,
    an_update_replaces_the_draft_and_keeps_the_creation_time,
    search_follows_an_update,
    updating_an_unknown_product_finds_nothing,
    a_category_of_another_kind_is_refused,
    an_unknown_category_is_refused,
    each_change_is_announced_and_refused_ones_are_not,
    a_price_change_is_announced_with_the_old_and_new_price,
    reopening_the_store_migrates_nothing_new_and_seeds_nothing_twice,
);
