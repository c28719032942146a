//! The gateway's one way to the services behind both of its faces: every call the REST
//! API and the storefront share, with its deadline and its fallback, exists here once and
//! answers with view types (the shapes of the public REST API) or a
//! [`Problem`](comb_kit::Problem). The REST handlers serialize what it returns; the
//! storefront renders it. An upstream answer the gateway cannot show (an unknown status
//! or role, a missing amount) is a 502 here, for both. Calls only the API makes (admin
//! writes, reports, token keys, logout) stay beside their routes.

pub mod accounts;
pub mod cart;
pub mod catalog;
pub mod messages;
pub mod orders;
pub mod reviews;
pub mod shipping;

use std::time::Duration;

/// How long a page or an answer waits for a part it can do without (a cart count, stock,
/// reviews, recommendations, a shipping quote).
pub const SIDE_DEADLINE: Duration = Duration::from_millis(300);
