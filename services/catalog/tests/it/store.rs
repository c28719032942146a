use comb_catalog::domain::{Cursor, ListFilter, Money, ProductDraft, ProductKind, SearchQuery};
use comb_catalog::store::{CatalogStore, Seed, StoreError};
use comb_testkit::TestDatabase;

use crate::seeded_store;

#[tokio::test]
async fn store_on_sqlite() {
    exercise(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&database).await;
}

async fn exercise(database: &TestDatabase) {
    let store = seeded_store(database).await;
    seed_loads_once(&store).await;
    pages_cover_everything_once(&store).await;
    filters_by_kind_and_category(&store).await;
    search_finds_by_title_creator_and_tag(&store).await;
    create_and_update(&store).await;
    // Opening again (a restart) migrates nothing new and seeds nothing twice.
    let reopened = seeded_store(database).await;
    assert_eq!(all_products(&reopened).await.len(), seed_size() + 1);
}

fn seed_size() -> usize {
    Seed::bundled().unwrap().products.len()
}

async fn all_products(store: &CatalogStore) -> Vec<comb_catalog::domain::Product> {
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

async fn seed_loads_once(store: &CatalogStore) {
    assert!(seed_size() >= 60, "at least 60 seed products");
    let again = store
        .seed_if_empty(&Seed::bundled().unwrap())
        .await
        .unwrap();
    assert_eq!(again, 0, "a catalog with products is not seeded again");
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

async fn pages_cover_everything_once(store: &CatalogStore) {
    let items = all_products(store).await;
    assert_eq!(items.len(), seed_size());
    let mut ids: Vec<&str> = items.iter().map(|p| p.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), seed_size(), "no product on two pages");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "pages are in id order");
    let first = &items[0];
    assert_eq!(store.get(&first.id).await.unwrap().as_ref(), Some(first));
    assert_eq!(store.get("no-such-id").await.unwrap(), None);
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

async fn filters_by_kind_and_category(store: &CatalogStore) {
    let videos = store
        .list(&ListFilter {
            kind: Some(ProductKind::Video),
            category: None,
            limit: 100,
            after: None,
        })
        .await
        .unwrap();
    assert!(videos.items.len() >= 20);
    assert!(
        videos
            .items
            .iter()
            .all(|p| p.draft.kind == ProductKind::Video)
    );
    let jazz = store
        .list(&ListFilter {
            kind: None,
            category: Some("jazz".into()),
            limit: 100,
            after: None,
        })
        .await
        .unwrap();
    assert!(!jazz.items.is_empty());
    assert!(jazz.items.iter().all(|p| p.draft.category == "jazz"));
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

async fn search_finds_by_title_creator_and_tag(store: &CatalogStore) {
    let titles = |products: Vec<comb_catalog::domain::Product>| -> Vec<String> {
        products.into_iter().map(|p| p.draft.title).collect()
    };
    let by_title = titles(
        store
            .search(&SearchQuery::parse("pride prejudice").unwrap(), 10)
            .await
            .unwrap(),
    );
    assert_eq!(
        by_title.first().map(String::as_str),
        Some("Pride and Prejudice"),
        "{by_title:?}"
    );
    let by_creator = store
        .search(&SearchQuery::parse("austen").unwrap(), 10)
        .await
        .unwrap();
    assert!(
        by_creator
            .iter()
            .any(|p| p.draft.creators.iter().any(|c| c.contains("Austen")))
    );
    let by_prefix = titles(
        store
            .search(&SearchQuery::parse("prid").unwrap(), 10)
            .await
            .unwrap(),
    );
    assert!(
        by_prefix.contains(&"Pride and Prejudice".to_owned()),
        "{by_prefix:?}"
    );
    let by_tag = store
        .search(&SearchQuery::parse("science-fiction").unwrap(), 50)
        .await
        .unwrap();
    assert!(
        by_tag.len() >= 2,
        "a tag shared across kinds finds several products"
    );
    let kinds: std::collections::HashSet<_> = by_tag.iter().map(|p| p.draft.kind).collect();
    assert!(kinds.len() >= 2, "search spans kinds: {kinds:?}");
    let nothing = store
        .search(&SearchQuery::parse("zzzqqqxxx").unwrap(), 10)
        .await
        .unwrap();
    assert!(nothing.is_empty());
    let hostile = store
        .search(&SearchQuery::parse("\" OR 1=1 -- NEAR( *").unwrap(), 10)
        .await;
    assert!(
        hostile.is_ok(),
        "query syntax in user input is not interpreted: {hostile:?}"
    );
    let limited = store
        .search(&SearchQuery::parse("the").unwrap(), 2)
        .await
        .unwrap();
    assert!(limited.len() <= 2);
}

async fn create_and_update(store: &CatalogStore) {
    let draft = ProductDraft {
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
    };
    let created = store.create(&draft).await.unwrap();
    assert_eq!(created.draft, draft);
    assert!(matches!(
        store.create(&draft).await,
        Err(StoreError::DuplicateSku(_))
    ));
    let found = store
        .search(&SearchQuery::parse("zanzibar").unwrap(), 5)
        .await
        .unwrap();
    assert_eq!(
        found.first().map(|p| p.id.as_str()),
        Some(created.id.as_str())
    );

    let mut renamed = draft.clone();
    renamed.title = "The Xylophone Test Manual".into();
    renamed.price.amount_minor = 3900;
    let updated = store.update(&created.id, &renamed).await.unwrap().unwrap();
    assert_eq!(updated.draft, renamed);
    assert_eq!(updated.created_at, created.created_at);
    assert!(
        store
            .search(&SearchQuery::parse("zanzibar").unwrap(), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .search(&SearchQuery::parse("xylophone").unwrap(), 5)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.update("no-such-id", &renamed).await.unwrap(), None);

    let mut wrong_kind = renamed.clone();
    wrong_kind.kind = ProductKind::Music;
    assert!(matches!(
        store.update(&created.id, &wrong_kind).await,
        Err(StoreError::CategoryKindMismatch { .. })
    ));
    let mut unknown = renamed;
    unknown.category = "poetry".into();
    assert!(matches!(
        store.create(&unknown).await,
        Err(StoreError::UnknownCategory(_))
    ));

    // Each change went out as events, in its own transaction; refused ones published none.
    let published = comb_kit::events::read_outbox(store.database(), "catalog", 0, 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = published.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "comb.product.created",
            "comb.product.updated",
            "comb.product.price_changed"
        ],
        "the seed publishes nothing; the refused update and create publish nothing"
    );
    let price: comb_contracts::events::PriceChanged = published[2].data().unwrap();
    assert_eq!((price.old_price_minor, price.new_price_minor), (4200, 3900));
}
