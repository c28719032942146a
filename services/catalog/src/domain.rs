//! The catalog's domain: products and their parts, parsed from untrusted input into types
//! that cannot hold invalid values.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use comb_kit::problem::FieldError;
use serde::Deserialize;

/// What a product is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductKind {
    Book,
    Music,
    Video,
}

impl ProductKind {
    pub const ALL: [ProductKind; 3] = [Self::Book, Self::Music, Self::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Book => "book",
            Self::Music => "music",
            Self::Video => "video",
        }
    }
}

impl fmt::Display for ProductKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProductKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a kind; use book, music or video"))
    }
}

/// An amount of money in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// The most a product may cost, in minor units.
pub const MAX_PRICE_MINOR: i64 = 100_000_000;

impl Money {
    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        if !(0..=MAX_PRICE_MINOR).contains(&self.amount_minor) {
            errors.push(FieldError::new(
                format!("{field}.amount_minor"),
                format!("must be between 0 and {MAX_PRICE_MINOR} (minor units, e.g. cents)"),
            ));
        }
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            errors.push(FieldError::new(
                format!("{field}.currency"),
                "must be an ISO 4217 code of three upper-case letters, e.g. USD",
            ));
        }
    }
}

/// The fields an admin sets on a product, before they are checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProductInput {
    pub sku: String,
    pub kind: String,
    pub title: String,
    pub creators: Vec<String>,
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    pub price: Money,
}

/// A product's fields, checked: every value here is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDraft {
    pub sku: String,
    pub kind: ProductKind,
    pub title: String,
    pub creators: Vec<String>,
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    pub price: Money,
}

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CREATORS: usize = 10;
pub const MAX_CREATOR_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_CHARS: usize = 32;
pub const MAX_SKU_CHARS: usize = 32;

impl ProductDraft {
    /// Checks every field and reports all that are wrong at once.
    pub fn parse(input: ProductInput) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let sku = input.sku.trim().to_owned();
        if sku.is_empty()
            || sku.len() > MAX_SKU_CHARS
            || !sku
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            errors.push(FieldError::new(
                "sku",
                format!("must be 1 to {MAX_SKU_CHARS} upper-case letters, digits or hyphens, e.g. BK-0001"),
            ));
        }
        let kind = input.kind.parse::<ProductKind>().map_err(|message| {
            errors.push(FieldError::new("kind", message));
        });
        let title = input.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            errors.push(FieldError::new(
                "title",
                format!("must be 1 to {MAX_TITLE_CHARS} characters"),
            ));
        }
        let creators: Vec<String> = input.creators.iter().map(|c| c.trim().to_owned()).collect();
        if creators.is_empty() || creators.len() > MAX_CREATORS {
            errors.push(FieldError::new(
                "creators",
                format!("must name 1 to {MAX_CREATORS} creators"),
            ));
        } else if creators
            .iter()
            .any(|creator| creator.is_empty() || creator.chars().count() > MAX_CREATOR_CHARS)
        {
            errors.push(FieldError::new(
                "creators",
                format!("each creator must be 1 to {MAX_CREATOR_CHARS} characters"),
            ));
        }
        let description = input.description.trim().to_owned();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let category = input.category.trim().to_owned();
        if !is_slug(&category) {
            errors.push(FieldError::new(
                "category",
                "must be a category slug: lower-case letters, digits and hyphens",
            ));
        }
        let tags: Vec<String> = input
            .tags
            .iter()
            .map(|tag| tag.trim().to_ascii_lowercase())
            .collect();
        if tags.len() > MAX_TAGS {
            errors.push(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
        } else if tags
            .iter()
            .any(|tag| !is_slug(tag) || tag.len() > MAX_TAG_CHARS)
        {
            errors.push(FieldError::new(
                "tags",
                format!(
                    "each tag must be 1 to {MAX_TAG_CHARS} lower-case letters, digits or hyphens"
                ),
            ));
        }
        for (field, text) in [("title", &title), ("description", &description)]
            .into_iter()
            .chain(creators.iter().map(|creator| ("creators", creator)))
        {
            if text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                errors.push(FieldError::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        input.price.validate("price", &mut errors);
        match kind {
            Ok(kind) if errors.is_empty() => Ok(Self {
                sku,
                kind,
                title,
                creators,
                description,
                category,
                tags,
                price: input.price,
            }),
            _ => Err(errors),
        }
    }
}

/// Whether `text` is a slug: lower-case letters, digits and hyphens, at most 64.
pub fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A product in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: String,
    pub draft: ProductDraft,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    pub media: ProductMedia,
}

/// What the shop shows and sells of a product, as the media service announced it ready;
/// kept as JSON beside the product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ProductMedia {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover: Option<MediaAsset>,
    /// What the product page plays (audio or video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<MediaAsset>,
    /// Sold as a download too: its full-length file is ready.
    #[serde(default)]
    pub downloadable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct MediaAsset {
    pub asset_id: String,
    /// image, audio or video.
    pub kind: String,
    /// The files anyone may fetch.
    pub files: Vec<MediaFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct MediaFile {
    pub name: String,
    pub content_type: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub duration_ms: u64,
}

/// A category with the number of products in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub kind: ProductKind,
    pub product_count: u32,
}

/// Page sizes callers may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// Which products to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub kind: Option<ProductKind>,
    pub category: Option<String>,
    pub limit: u32,
    pub after: Option<Cursor>,
}

/// A page of products and the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Product>,
    pub next_cursor: Option<Cursor>,
}

/// A position in the product list: opaque to callers, the last id of a page inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn after(id: &str) -> Self {
        Self(id.to_owned())
    }

    pub fn last_id(&self) -> &str {
        &self.0
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("p1:{}", self.0))
    }

    /// Reads a cursor this service issued; anything else is refused.
    pub fn decode(text: &str) -> Result<Self, String> {
        let refuse =
            || "is not a cursor this API issued; pass next_cursor from an earlier page".to_owned();
        if text.len() > 128 {
            return Err(refuse());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| refuse())?;
        let decoded = String::from_utf8(bytes).map_err(|_| refuse())?;
        let id = decoded.strip_prefix("p1:").ok_or_else(refuse)?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(refuse());
        }
        Ok(Self(id.to_owned()))
    }
}

/// The longest search text accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Words past this many are ignored.
const MAX_QUERY_TERMS: usize = 12;

/// A full-text search: the words of the query, each matched as a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    terms: Vec<String>,
}

impl SearchQuery {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(format!("must be at most {MAX_QUERY_CHARS} characters"));
        }
        let terms = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|term| !term.is_empty())
            .take(MAX_QUERY_TERMS)
            .map(str::to_lowercase)
            .collect();
        Ok(Self { terms })
    }

    /// Whether nothing searchable is left (the query was only punctuation).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The query in SQLite FTS5 syntax: every term, as a prefix, must match.
    pub fn to_fts5(&self) -> String {
        self.terms
            .iter()
            .map(|term| format!("\"{term}\"*"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The query in PostgreSQL `to_tsquery` syntax: every term, as a prefix, must match.
    pub fn to_tsquery(&self) -> String {
        self.terms
            .iter()
            .map(|term| format!("{term}:*"))
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ProductInput {
        ProductInput {
            sku: "BK-9001".into(),
            kind: "book".into(),
            title: "  Dune ".into(),
            creators: vec!["Frank Herbert".into()],
            description: "Desert planet.".into(),
            category: "science-fiction".into(),
            tags: vec!["Space".into()],
            price: Money {
                amount_minor: 1299,
                currency: "USD".into(),
            },
        }
    }

    #[test]
    fn a_valid_product_is_trimmed_and_normalised() {
        let draft = ProductDraft::parse(input()).expect("valid");
        assert_eq!(draft.title, "Dune");
        assert_eq!(draft.kind, ProductKind::Book);
        assert_eq!(draft.tags, vec!["space"]);
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut bad = input();
        bad.sku = "bk 1".into();
        bad.kind = "vinyl".into();
        bad.title = " ".into();
        bad.creators = vec![];
        bad.category = "Sci Fi".into();
        bad.price = Money {
            amount_minor: -1,
            currency: "usd".into(),
        };
        let errors = ProductDraft::parse(bad).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sku",
                "kind",
                "title",
                "creators",
                "category",
                "price.amount_minor",
                "price.currency"
            ]
        );
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = Cursor::after("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(
            Cursor::decode(&cursor.encode()).expect("round trip"),
            cursor
        );
        for bad in [
            "",
            "abc",
            "!!!!",
            &URL_SAFE_NO_PAD.encode("p1:'; drop table"),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn search_terms_are_sanitised_for_both_engines() {
        let query = SearchQuery::parse(r#"Miles "Davis" OR* NEAR(x)"#).expect("query");
        assert_eq!(query.to_fts5(), r#""miles"* "davis"* "or"* "near"* "x"*"#);
        assert_eq!(
            query.to_tsquery(),
            "miles:* & davis:* & or:* & near:* & x:*"
        );
        assert!(
            SearchQuery::parse("?!")
                .expect("punctuation only")
                .is_empty()
        );
        assert!(SearchQuery::parse("   ").is_err());
        assert!(SearchQuery::parse(&"a".repeat(10_000)).is_err());
    }
}
