//! comb's contracts: the gRPC protocols services speak to each other, generated from the
//! `.proto` files in `proto/`, and the claims of comb's access tokens. A service depends on
//! this crate, never on another service's crate, so the wire format is the only coupling
//! between them.

pub mod auth;
pub mod cards;
pub mod events;
pub mod ids;

/// The gRPC methods (`/package.Service/Method`) a caller may retry: those whose
/// `idempotency_level` option is `NO_SIDE_EFFECTS` or `IDEMPOTENT` in the protocol files.
pub const RETRY_SAFE_METHODS: &[&str] = include!(concat!(env!("OUT_DIR"), "/retry_safe.rs"));

/// The gRPC methods whose caller sends a stream (uploads): a caller cannot keep such a
/// request to send it again, so it goes to one instance once.
pub const CLIENT_STREAMING_METHODS: &[&str] =
    include!(concat!(env!("OUT_DIR"), "/client_streaming.rs"));

/// The catalog service: products, categories, search.
pub mod catalog {
    /// Version 1 of the catalog protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.catalog.v1");
    }
}

/// The users service: accounts, sign-in, tokens and their keys.
pub mod users {
    /// Version 1 of the users protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.users.v1");
    }
}

/// The inventory service: stock per SKU and reservations for orders.
pub mod inventory {
    /// Version 1 of the inventory protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.inventory.v1");
    }
}

/// The cart service: shoppers' carts.
pub mod cart {
    /// Version 1 of the cart protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.cart.v1");
    }
}

/// The payments service: authorizations, captures, voids and refunds.
pub mod payments {
    /// Version 1 of the payments protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.payments.v1");
    }
}

/// The shipping service: quotes, shipments and tracking.
pub mod shipping {
    /// Version 1 of the shipping protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.shipping.v1");
    }
}

/// The orders service: checkout through the order saga, and order history.
pub mod orders {
    /// Version 1 of the orders protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.orders.v1");
    }
}

/// The notifications service: the mailbox of messages sent to people.
pub mod notifications {
    /// Version 1 of the notifications protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.notifications.v1");
    }
}

/// The recommendations service: products bought together.
pub mod recommendations {
    /// Version 1 of the recommendations protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.recommendations.v1");
    }
}

/// The reports service: sales figures from events.
pub mod reports {
    /// Version 1 of the reports protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.reports.v1");
    }
}

/// The reviews service: ratings and reviews by verified purchasers.
pub mod reviews {
    /// Version 1 of the reviews protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.reviews.v1");
    }
}

/// Data versions: how far a service's data has moved on, watched by callers that keep its
/// answers.
pub mod versions {
    /// Version 1 of the data versions protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.versions.v1");
    }
}

/// The media service: product media, their renditions and the jobs that make them.
pub mod media {
    /// Whether `name` can name a rendition (`/media/{asset}/{name}`): lower-case letters,
    /// digits and hyphens, one dot and a known extension; so no name is ever a path.
    pub fn is_rendition_name(name: &str) -> bool {
        let Some((stem, extension)) = name.split_once('.') else {
            return false;
        };
        (1..=48).contains(&stem.len())
            && stem
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && [
                "webp", "jpg", "svg", "m4a", "webm", "mp3", "mp4", "m3u8", "ts",
            ]
            .contains(&extension)
    }

    /// Version 1 of the media protocol.
    pub mod v1 {
        #![allow(unreachable_pub, missing_docs, clippy::all)]
        tonic::include_proto!("comb.media.v1");
    }
}
