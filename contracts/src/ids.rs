//! The identities and amounts that cross service boundaries in events, as types of their
//! own, so that a SKU cannot be passed where a product id is meant, nor a quantity where
//! an amount is. On the wire each is its plain JSON value (`"P-1"`, `3`), so events
//! published before these types existed read the same.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! text_id {
    ($(#[doc = $doc:literal] $name:ident;)+) => {
        $(
            #[doc = $doc]
            #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
            #[serde(transparent)]
            pub struct $name(String);

            impl $name {
                pub fn new(id: impl Into<String>) -> Self {
                    Self(id.into())
                }

                pub fn as_str(&self) -> &str {
                    &self.0
                }

                pub fn into_string(self) -> String {
                    self.0
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(&self.0)
                }
            }

            impl From<String> for $name {
                fn from(id: String) -> Self {
                    Self(id)
                }
            }

            impl PartialEq<str> for $name {
                fn eq(&self, other: &str) -> bool {
                    self.0 == other
                }
            }

            impl PartialEq<&str> for $name {
                fn eq(&self, other: &&str) -> bool {
                    self.0 == *other
                }
            }

            impl From<&str> for $name {
                fn from(id: &str) -> Self {
                    Self(id.to_owned())
                }
            }
        )+
    };
}

text_id! {
    /// A product's id, as the catalog made it.
    ProductId;
    /// A stock keeping unit: what inventory counts and sells.
    Sku;
    /// An order's id, as orders made it.
    OrderId;
}

/// How many of a product: a count, never an amount of money.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Quantity(i64);

impl Quantity {
    pub const fn new(count: i64) -> Self {
        Self(count)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i64> for Quantity {
    fn from(count: i64) -> Self {
        Self(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_quantities_are_their_plain_values_on_the_wire() {
        let sku = Sku::new("BK-0001");
        assert_eq!(
            serde_json::to_string(&sku).ok().as_deref(),
            Some("\"BK-0001\"")
        );
        let read: Result<ProductId, _> = serde_json::from_str("\"p-1\"");
        assert_eq!(read.ok(), Some(ProductId::new("p-1")));
        let quantity: Result<Quantity, _> = serde_json::from_str("3");
        assert_eq!(quantity.ok().map(Quantity::get), Some(3));
        assert!(serde_json::from_str::<Quantity>("\"3\"").is_err());
    }
}
