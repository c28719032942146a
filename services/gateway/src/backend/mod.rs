//! The gateway's one way to each service it calls: every upstream call, its deadline and
//! its fallback exist here once, and answer with view types (the shapes of the public
//! REST API) or a [`Problem`](comb_kit::Problem). The REST handlers serialize what it
//! returns; the storefront renders it. An upstream answer the gateway cannot show (an
//! unknown status, a missing amount) is a 502 here, for both.

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
