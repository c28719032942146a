//! The catalog's storage: products and categories in the service's own database, with
//! full-text search (FTS5 on SQLite, a weighted tsvector on PostgreSQL).

use comb_contracts::events as contract;
use comb_kit::clock::now_rfc3339;
use comb_kit::events::{self, Event};
use comb_kit::storage::{Backend, Database, sql};
use serde::Deserialize;

use crate::domain::{
    Category, Cursor, ListFilter, Page, Product, ProductDraft, ProductInput, ProductKind,
    SearchQuery,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a product with sku {0} already exists")]
    DuplicateSku(String),
    #[error("there is no category {0:?}")]
    UnknownCategory(String),
    #[error("category {category:?} holds {category_kind} products, not {kind}")]
    CategoryKindMismatch {
        category: String,
        category_kind: ProductKind,
        kind: ProductKind,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sql::DbError),
}

/// Products and categories.
#[derive(Debug, Clone)]
pub struct CatalogStore {
    db: Database,
}

/// Every product column, in the order [`product_from_row`] reads them.
macro_rules! product_columns {
    () => {
        "id, sku, kind, title, creators, description, category, tags, price_minor, currency, created_at, updated_at"
    };
}

/// Every column a read of a product returns: its own and its media.
macro_rules! selected_columns {
    () => {
        concat!(product_columns!(), ", media")
    };
}

/// Writes of a product take the same parameters: see [`bind_product`].
macro_rules! insert_product {
    () => {
        concat!(
            "INSERT INTO products (",
            product_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
        )
    };
}
const INSERT_PRODUCT: &str = insert_product!();
const SEED_PRODUCT: &str = concat!(insert_product!(), " ON CONFLICT (sku) DO NOTHING");
const UPDATE_PRODUCT: &str = "UPDATE products SET sku = $2, kind = $3, title = $4, creators = $5,
    description = $6, category = $7, tags = $8, price_minor = $9, currency = $10, updated_at = $11
    WHERE id = $1";

/// The most ids one `get_many` call looks up.
pub const MAX_BATCH: usize = 100;

impl CatalogStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The service's database (its inbox and feed positions live there too).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// A product's reviews count and rating sum, once it has any.
    pub async fn rating(&self, id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let row =
            sql::query("SELECT reviews, rating_sum FROM product_ratings WHERE product_id = $1")
                .bind(id)
                .fetch_optional(&self.db)
                .await?;
        Ok(match row {
            Some(row) => Some((row.try_get("reviews")?, row.try_get("rating_sum")?)),
            None => None,
        })
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let kind = filter.kind.map(ProductKind::as_str).unwrap_or_default();
        let category = filter.category.as_deref().unwrap_or_default();
        let after = filter
            .after
            .as_ref()
            .map(Cursor::last_id)
            .unwrap_or_default();
        let rows = sql::query(concat!(
            "SELECT ",
            selected_columns!(),
            " FROM products WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR category = $2) AND id > $3",
            " ORDER BY id LIMIT CAST($4 AS BIGINT)"
        ))
        .bind(kind)
        .bind(category)
        .bind(after)
        .bind(i64::from(filter.limit) + 1)
        .fetch_all(&self.db)
        .await?;
        let mut items = rows
            .iter()
            .map(product_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > filter.limit as usize {
            items.truncate(filter.limit as usize);
            items.last().map(|product| Cursor::after(&product.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Product>, StoreError> {
        let row = sql::query(concat!(
            "SELECT ",
            selected_columns!(),
            " FROM products WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(product_from_row).transpose()
    }

    /// The products with these ids, in the order asked; unknown ids are left out.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<Product>, StoreError> {
        let ids = &ids[..ids.len().min(MAX_BATCH)];
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=ids.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {} FROM products WHERE id IN ({placeholders})",
            selected_columns!()
        );
        let mut query = sql::query(sql);
        for id in ids {
            query = query.bind(id.as_str());
        }
        let rows = query.fetch_all(&self.db).await?;
        let found = rows
            .iter()
            .map(product_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|product| &product.id == id).cloned())
            .collect())
    }

    /// Products matching every term of the query, best match first.
    pub async fn search(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match self.db.backend() {
            // bm25 weights follow the column order: title, creators, description, tags.
            Backend::Sqlite => {
                sql::query(concat!(
                    "WITH hits AS (SELECT rowid AS hit, bm25(products_fts, 10.0, 5.0, 1.0, 3.0) AS score",
                    " FROM products_fts WHERE products_fts MATCH $1 ORDER BY score LIMIT CAST($2 AS BIGINT))",
                    " SELECT ",
                    selected_columns!(),
                    " FROM products JOIN hits ON products.rowid = hits.hit ORDER BY hits.score, id"
                ))
                .bind(query.to_fts5())
            }
            Backend::Postgres => {
                sql::query(concat!(
                    "SELECT ",
                    selected_columns!(),
                    " FROM products, to_tsquery('english', $1) AS q WHERE search @@ q",
                    " ORDER BY ts_rank(search, q) DESC, id LIMIT CAST($2 AS BIGINT)"
                ))
                .bind(query.to_tsquery())
            }
        }
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(product_from_row).collect()
    }

    pub async fn categories(&self) -> Result<Vec<Category>, StoreError> {
        let rows = sql::query(
            "SELECT c.slug, c.name, c.kind, COUNT(p.id) AS product_count
             FROM categories c LEFT JOIN products p ON p.category = c.slug
             GROUP BY c.slug, c.name, c.kind ORDER BY c.kind, c.name",
        )
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Category {
                    slug: row.try_get("slug")?,
                    name: row.try_get("name")?,
                    kind: parse_kind(&row.try_get::<String, _>("kind")?)?,
                    product_count: u32::try_from(row.try_get::<i64, _>("product_count")?)
                        .unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    pub async fn create(&self, draft: &ProductDraft) -> Result<Product, StoreError> {
        self.check_category(draft).await?;
        let now = now_rfc3339();
        let product = Product {
            id: uuid::Uuid::now_v7().to_string(),
            draft: draft.clone(),
            created_at: now.clone(),
            updated_at: now,
            media: crate::domain::ProductMedia::default(),
        };
        let mut tx = self.db.begin_write().await?;
        bind_product(INSERT_PRODUCT, &product.id, draft, &product.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|error| sku_conflict(error, &draft.sku))?;
        publish(
            &self.db,
            &mut tx,
            contract::PRODUCT_CREATED,
            &changed(&product.id, draft),
        )
        .await?;
        events::commit(&self.db, tx).await?;
        self.seen_own_write().await;
        Ok(product)
    }

    /// Replaces a product's fields; `None` when there is no such product.
    pub async fn update(
        &self,
        id: &str,
        draft: &ProductDraft,
    ) -> Result<Option<Product>, StoreError> {
        self.check_category(draft).await?;
        let mut tx = self.db.begin_write().await?;
        let old_price: Option<i64> = sql::query_scalar(format!(
            "SELECT price_minor FROM products WHERE id = $1{}",
            self.db.lock_rows()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(old_price) = old_price else {
            return Ok(None);
        };
        bind_product(UPDATE_PRODUCT, id, draft, &now_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(|error| sku_conflict(error, &draft.sku))?;
        publish(
            &self.db,
            &mut tx,
            contract::PRODUCT_UPDATED,
            &changed(id, draft),
        )
        .await?;
        if old_price != draft.price.amount_minor {
            let price = contract::PriceChanged {
                product_id: id.into(),
                sku: draft.sku.as_str().into(),
                old_price_minor: old_price,
                new_price_minor: draft.price.amount_minor,
                currency: draft.price.currency.clone(),
            };
            publish(&self.db, &mut tx, contract::PRICE_CHANGED, &price).await?;
        }
        events::commit(&self.db, tx).await?;
        self.seen_own_write().await;
        self.get(id).await
    }

    /// Moves this instance's data version past a write it just committed, so its next
    /// read (and its caches) see the write.
    async fn seen_own_write(&self) {
        if let Err(error) = self.db.refresh_data_version().await {
            tracing::warn!(%error, "cannot read the data version after a write; caches catch up at the next poll");
        }
    }

    async fn check_category(&self, draft: &ProductDraft) -> Result<(), StoreError> {
        let kind: Option<String> = sql::query_scalar("SELECT kind FROM categories WHERE slug = $1")
            .bind(draft.category.as_str())
            .fetch_optional(&self.db)
            .await?;
        let kind = kind.ok_or_else(|| StoreError::UnknownCategory(draft.category.clone()))?;
        let category_kind = parse_kind(&kind)?;
        if category_kind != draft.kind {
            return Err(StoreError::CategoryKindMismatch {
                category: draft.category.clone(),
                category_kind,
                kind: draft.kind,
            });
        }
        Ok(())
    }

    /// Loads the seed catalog into an empty database; a database with products is left
    /// alone. Returns how many products were added.
    pub async fn seed_if_empty(&self, seed: &Seed) -> Result<usize, StoreError> {
        let count: i64 = sql::query_scalar("SELECT COUNT(*) FROM products")
            .fetch_one(&self.db)
            .await?;
        if count > 0 {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        for category in &seed.categories {
            sql::query("INSERT INTO categories (slug, name, kind) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING")
                .bind(category.slug.as_str())
                .bind(category.name.as_str())
                .bind(category.kind.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let now = now_rfc3339();
        let mut added = 0;
        for draft in &seed.products {
            let id = uuid::Uuid::now_v7().to_string();
            let result = bind_product(SEED_PRODUCT, &id, draft, &now)
                .execute(&mut *tx)
                .await?;
            // Announced like any new product, so the services that keep something per
            // product (stock lines, drawn covers) have it for the seeded ones too.
            if result.rows_affected() > 0 {
                publish(
                    &self.db,
                    &mut tx,
                    contract::PRODUCT_CREATED,
                    &changed(&id, draft),
                )
                .await?;
            }
            added += result.rows_affected() as usize;
        }
        events::commit(&self.db, tx).await?;
        self.seen_own_write().await;
        Ok(added)
    }
}

/// The catalog a new store starts with.
#[derive(Debug, Clone)]
pub struct Seed {
    pub categories: Vec<SeedCategory>,
    pub products: Vec<ProductDraft>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedCategory {
    pub slug: String,
    pub name: String,
    pub kind: ProductKind,
}

#[derive(Deserialize)]
struct SeedFile {
    categories: Vec<SeedCategory>,
    products: Vec<ProductInput>,
}

impl Seed {
    /// The seed catalog shipped with comb: books, music and video.
    pub fn bundled() -> Result<Self, StoreError> {
        Self::parse(include_str!("../seed/catalog.json"))
    }

    pub fn parse(json: &str) -> Result<Self, StoreError> {
        let file: SeedFile = serde_json::from_str(json)
            .map_err(|error| StoreError::Corrupt(format!("seed catalog: {error}")))?;
        let products = file
            .products
            .into_iter()
            .map(|input| {
                let sku = input.sku.clone();
                ProductDraft::parse(input).map_err(|errors| {
                    StoreError::Corrupt(format!("seed product {sku}: {errors:?}"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            categories: file.categories,
            products,
        })
    }
}

/// A product write with `id` as $1, the draft's fields as $2 to $10 and `time` as $11
/// (the creation and update time of a new product, the update time of a changed one).
fn bind_product<'q>(
    sql: &'static str,
    id: &'q str,
    draft: &'q ProductDraft,
    time: &'q str,
) -> sql::Query<'static> {
    sql::query(sql)
        .bind(id)
        .bind(draft.sku.as_str())
        .bind(draft.kind.as_str())
        .bind(draft.title.as_str())
        .bind(to_json(&draft.creators))
        .bind(draft.description.as_str())
        .bind(draft.category.as_str())
        .bind(to_json(&draft.tags))
        .bind(draft.price.amount_minor)
        .bind(draft.price.currency.as_str())
        .bind(time)
}

/// What ProductCreated and ProductUpdated say about a product.
fn changed(id: &str, draft: &ProductDraft) -> contract::ProductChanged {
    contract::ProductChanged {
        product_id: id.into(),
        sku: draft.sku.as_str().into(),
        kind: draft.kind.as_str().to_owned(),
        title: draft.title.clone(),
        price_minor: draft.price.amount_minor,
        currency: draft.price.currency.clone(),
        creators: draft.creators.clone(),
    }
}

/// Writes an event about a product to the outbox, in the caller's transaction.
async fn publish(
    db: &Database,
    tx: &mut sql::Transaction,
    kind: &str,
    data: &impl serde::Serialize,
) -> Result<(), StoreError> {
    let event = Event::new("catalog", kind, "", data)
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    events::publish(db, tx, &event).await?;
    Ok(())
}

fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn sku_conflict(error: sql::DbError, sku: &str) -> StoreError {
    match &error {
        error if error.is_unique_violation() => StoreError::DuplicateSku(sku.to_owned()),
        _ => StoreError::Database(error),
    }
}

fn parse_kind(text: &str) -> Result<ProductKind, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

fn product_from_row(row: &sql::Row) -> Result<Product, StoreError> {
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|error| StoreError::Corrupt(format!("products.{column}: {error}")))
    };
    Ok(Product {
        id: row.try_get("id")?,
        draft: ProductDraft {
            sku: row.try_get("sku")?,
            kind: parse_kind(&row.try_get::<String, _>("kind")?)?,
            title: row.try_get("title")?,
            creators: list("creators")?,
            description: row.try_get("description")?,
            category: row.try_get("category")?,
            tags: list("tags")?,
            price: crate::domain::Money {
                amount_minor: row.try_get("price_minor")?,
                currency: row.try_get("currency")?,
            },
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        media: {
            let text: String = row.try_get("media")?;
            serde_json::from_str(&text)
                .map_err(|error| StoreError::Corrupt(format!("products.media: {error}")))?
        },
    })
}
