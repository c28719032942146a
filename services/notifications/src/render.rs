//! What the messages say: a confirmation with the order's lines and totals, a
//! cancellation with its reason in words, a welcome.

use comb_contracts::events::{OrderCancelled, OrderConfirmed, ShipmentShipped, UserRegistered};

/// A message ready for the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub kind: &'static str,
    pub subject: String,
    pub body: String,
}

/// An amount for people: `$12.99` for US dollars, `12.99 EUR` otherwise.
pub fn money(amount_minor: i64, currency: &str) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    let amount = amount_minor.unsigned_abs();
    let text = format!("{}.{:02}", amount / 100, amount % 100);
    if currency == "USD" {
        format!("{sign}${text}")
    } else {
        format!("{sign}{text} {currency}")
    }
}

fn short(order_id: &str) -> &str {
    order_id
        .get(order_id.len().saturating_sub(8)..)
        .unwrap_or(order_id)
}

/// A signed link to a download, as a confirmation lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLink {
    pub title: String,
    /// The link's path on the shop.
    pub url: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// The confirmation of `order`, with the signed links to its downloads when there are
/// some (`None`: they could not be signed, so the message points to the order page).
pub fn order_confirmed(order: &OrderConfirmed, downloads: Option<&[DownloadLink]>) -> Rendered {
    let mut body = String::from("Thank you for your order. Here is what is on its way:\n\n");
    for line in &order.lines {
        body.push_str(&format!(
            "  {} × {}{} — {}\n",
            line.quantity,
            line.title,
            if line.digital { " (download)" } else { "" },
            money(line.line_total_minor, &order.currency)
        ));
    }
    if order.lines.iter().any(|line| line.digital) {
        match downloads {
            Some(links) if !links.is_empty() => {
                body.push_str("\nYour downloads (each link works until it expires; fresh ones are on your order page):\n");
                for link in links {
                    body.push_str(&format!(
                        "  {}: {} (until {})\n",
                        link.title, link.url, link.expires_at
                    ));
                }
            }
            _ => body.push_str(&format!(
                "\nYour downloads are on your order page: /shop/orders/{}\n",
                order.order_id.as_str()
            )),
        }
    }
    body.push_str(&format!(
        "\nSubtotal: {}\nShipping: {}\nTotal: {}\n",
        money(order.subtotal_minor, &order.currency),
        money(order.shipping_minor, &order.currency),
        money(order.total_minor, &order.currency)
    ));
    if !order.tracking_id.is_empty() {
        body.push_str(&format!("\nTracking number: {}\n", order.tracking_id));
    }
    Rendered {
        kind: "order_confirmed",
        subject: format!(
            "Your comb order …{} is confirmed",
            short(order.order_id.as_str())
        ),
        body,
    }
}

/// A cancellation reason as a person would say it.
pub fn reason_in_words(reason: &str) -> &'static str {
    match reason {
        "out_of_stock" => "some of the items are no longer in stock",
        "payment_declined" => "your card was declined",
        "payment_failed" => "the payment could not be completed",
        "deadline_exceeded" => "it could not be completed in time",
        "cancelled_by_customer" => "you cancelled it",
        "refunded" => "it was refunded",
        _ => "it could not be completed",
    }
}

pub fn order_cancelled(order: &OrderCancelled) -> Rendered {
    // A refund comes after a confirmation: the buyer was charged and is paid back.
    if order.reason == "refunded" {
        return Rendered {
            kind: "order_cancelled",
            subject: format!(
                "Your comb order …{} was refunded",
                short(order.order_id.as_str())
            ),
            body: format!(
                "Your order of {} was refunded: the money goes back to your card. Its downloads no longer open.\n",
                money(order.total_minor, &order.currency),
            ),
        };
    }
    Rendered {
        kind: "order_cancelled",
        subject: format!(
            "Your comb order …{} was cancelled",
            short(order.order_id.as_str())
        ),
        body: format!(
            "We are sorry: your order of {} was cancelled because {}. You have not been charged.\n",
            money(order.total_minor, &order.currency),
            reason_in_words(&order.reason)
        ),
    }
}

pub fn shipment_shipped(shipment: &ShipmentShipped) -> Rendered {
    Rendered {
        kind: "shipment_shipped",
        subject: format!(
            "Your comb order …{} is on its way",
            short(shipment.order_id.as_str())
        ),
        body: format!(
            "Your order has shipped. Its tracking number is {}.\n",
            shipment.tracking_id
        ),
    }
}

pub fn welcome(user: &UserRegistered) -> Rendered {
    Rendered {
        kind: "welcome",
        subject: "Welcome to comb".into(),
        body: format!(
            "Hello {}, welcome to comb: books, music and video. Your account is {}.\n",
            user.name, user.email
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comb_contracts::events::OrderLine;

    #[test]
    fn money_reads_naturally() {
        assert_eq!(money(1299, "USD"), "$12.99");
        assert_eq!(money(5, "USD"), "$0.05");
        assert_eq!(money(120000, "EUR"), "1200.00 EUR");
        assert_eq!(money(-250, "USD"), "-$2.50");
    }

    #[test]
    fn a_confirmation_lists_lines_totals_and_tracking() {
        let message = order_confirmed(
            &OrderConfirmed {
                order_id: "01a2-0000-1234abcd".into(),
                owner: "u".into(),
                email: "a@b.co".into(),
                lines: vec![OrderLine {
                    digital: false,
                    product_id: "p".into(),
                    sku: "BK-1".into(),
                    title: "Dune".into(),
                    quantity: 2.into(),
                    unit_price_minor: 999,
                    line_total_minor: 1998,
                }],
                subtotal_minor: 1998,
                shipping_minor: 499,
                total_minor: 2497,
                currency: "USD".into(),
                tracking_id: "CMB123".into(),
                placed_at: String::new(),
            },
            None,
        );
        assert_eq!(message.subject, "Your comb order …1234abcd is confirmed");
        for part in [
            "2 × Dune — $19.98",
            "Subtotal: $19.98",
            "Shipping: $4.99",
            "Total: $24.97",
            "CMB123",
        ] {
            assert!(message.body.contains(part), "{part} in {}", message.body);
        }
    }

    #[test]
    fn a_confirmation_of_downloads_carries_their_links_or_the_order_page() {
        let order = OrderConfirmed {
            order_id: "o-1".into(),
            owner: "u".into(),
            email: "a@b.co".into(),
            lines: vec![OrderLine {
                digital: true,
                product_id: "p".into(),
                sku: "MU-1".into(),
                title: "Kind of Blue".into(),
                quantity: 1.into(),
                unit_price_minor: 999,
                line_total_minor: 999,
            }],
            subtotal_minor: 999,
            shipping_minor: 0,
            total_minor: 999,
            currency: "USD".into(),
            tracking_id: String::new(),
            placed_at: String::new(),
        };
        let links = [DownloadLink {
            title: "Kind of Blue".into(),
            url: "/media/a/download.mp3?order=o-1&expires=9&sig=ab".into(),
            expires_at: "2026-12-09T00:00:00Z".into(),
        }];
        let message = order_confirmed(&order, Some(&links));
        assert!(
            message.body.contains("1 × Kind of Blue (download)"),
            "{}",
            message.body
        );
        assert!(message.body.contains("Kind of Blue: /media/a/download.mp3?order=o-1&expires=9&sig=ab (until 2026-12-09T00:00:00Z)"), "{}", message.body);
        let unsigned = order_confirmed(&order, None);
        assert!(
            unsigned.body.contains("/shop/orders/o-1"),
            "{}",
            unsigned.body
        );
        assert!(!unsigned.body.contains("Tracking"), "{}", unsigned.body);
    }

    #[test]
    fn cancellations_say_why_in_words() {
        assert_eq!(
            reason_in_words("payment_declined"),
            "your card was declined"
        );
        assert_eq!(
            reason_in_words("something new"),
            "it could not be completed"
        );
    }
}
