//! The storefront in a real browser ([`crate::browser`]), on the whole system started by
//! `comb up`. Each journey checks every page it passes (one `h1`, labelled fields, alt
//! text, contrast) and keeps screenshots. One journey shops with the keyboard alone where
//! it matters: skip link, add to cart, retry.

use std::time::Duration;

use fantoccini::key::Key;

use crate::browser::browser;
use crate::{Comb, eventually, repo_topology, text};

const ADDRESS: &[(&str, &str)] = &[
    ("name", "Ada Lovelace"),
    ("line1", "1 Engine Way"),
    ("city", "London"),
    ("postal_code", "N1 9GU"),
    ("country", "GB"),
    ("exp_month", "12"),
    ("exp_year", "2030"),
    ("cvc", "123"),
];

fn with_card<'a>(card: &'a str, email: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut fields: Vec<(&str, &str)> = ADDRESS.to_vec();
    fields.push(("card_number", card));
    if let Some(email) = email {
        fields.push(("email", email));
    }
    fields
}

#[tokio::test]
async fn a_customer_searches_buys_and_reviews() {
    let comb = Comb::up(&repo_topology());
    let shop = comb.gateway();
    let Some(browser) = browser("customer").await else {
        return;
    };

    browser.goto(&format!("{shop}/")).await;
    browser.wait_for("Books, music and video", false).await;
    browser.check("home").await;

    browser.fill("form.search", &[("q", "Pride")]).await;
    browser.wait_for("Results for", false).await;
    browser.check("search").await;
    browser.click("main a[href^='/shop/products/']").await;
    let product_page = browser.wait_for("Add to cart", false).await;
    assert!(product_page.contains("Pride and Prejudice"));
    assert!(
        product_page.contains("In stock"),
        "the stock state is shown"
    );
    let product_url = browser.client.current_url().await.unwrap().to_string();
    browser.check("product").await;

    browser
        .fill("form[action='/shop/cart/items']", &[("quantity", "2")])
        .await;
    let cart = browser.wait_for("Your cart", false).await;
    assert!(cart.contains("Pride and Prejudice"));
    browser.check("cart").await;

    let email = format!("ada-{}@example.com", std::process::id());
    browser.goto(&format!("{shop}/shop/register")).await;
    browser.check("register").await;
    browser
        .fill(
            "form[action='/shop/register']",
            &[
                ("name", "Ada"),
                ("email", &email),
                ("password", "analytical engine"),
            ],
        )
        .await;
    browser.wait_for("Hello, Ada", false).await;

    // The guest's cart is the customer's now.
    browser.goto(&format!("{shop}/shop/cart")).await;
    browser.wait_for("Pride and Prejudice", false).await;
    browser.click("a[href='/shop/checkout']").await;
    let checkout = browser.wait_for("Place order", false).await;
    assert!(
        checkout.contains(&email),
        "the customer's email is filled in"
    );
    browser.fill("form.quote", &[("country", "GB")]).await;
    let quoted = browser.wait_for("Shipping to United Kingdom:", false).await;
    assert!(quoted.contains("id=\"shipping-quote\""), "{quoted}");
    browser.check("checkout").await;
    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &with_card("4242 4242 4242 4242", None),
        )
        .await;
    browser.wait_for(">CONFIRMED<", true).await;
    browser.check("confirmation").await;

    browser.goto(&format!("{shop}/shop/orders")).await;
    browser.wait_for("CONFIRMED", false).await;
    browser.check("orders").await;

    browser.goto(&format!("{shop}/shop/mailbox")).await;
    browser.wait_for("is confirmed", true).await;
    browser.check("mailbox").await;

    // Reviews learn of the purchase from the order's event: retry until they have.
    eventually("the review accepted", Duration::from_secs(30), || async {
        browser.goto(&product_url).await;
        browser
            .fill(
                "form[action$='/reviews']",
                &[
                    ("rating", "5"),
                    ("title", "Witty and warm"),
                    ("body", "A joy to read."),
                ],
            )
            .await;
        // The post answers with a redirect naming its outcome; wait for it to land.
        let outcome = eventually("the review's outcome", Duration::from_secs(10), || async {
            let url = browser.client.current_url().await.ok()?.to_string();
            url.contains("review=").then_some(url)
        })
        .await;
        // A post that landed while the previous look was still loading counts too.
        (outcome.contains("review=posted") || outcome.contains("review=duplicate")).then_some(())
    })
    .await;
    browser.goto(&product_url).await;
    browser.wait_for("Witty and warm", false).await;
    browser.check("product-reviewed").await;
    browser.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_guest_buys_and_the_product_page_outlives_reviews() {
    let comb = Comb::up(&repo_topology());
    let shop = comb.gateway();
    let Some(browser) = browser("guest").await else {
        return;
    };

    browser
        .goto(&format!("{shop}/shop/browse?kind=music"))
        .await;
    browser.wait_for("<h1>Music</h1>", false).await;
    browser.check("browse").await;
    browser
        .click("main ul.grid a[href^='/shop/products/']")
        .await;
    browser.wait_for("Add to cart", false).await;
    let product_url = browser.client.current_url().await.unwrap().to_string();
    browser
        .fill("form[action='/shop/cart/items']", &[("quantity", "1")])
        .await;
    browser.wait_for("Your cart", false).await;

    // A missing field is marked, and nothing is ordered.
    browser.goto(&format!("{shop}/shop/checkout")).await;
    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &[("email", "")],
        )
        .await;
    let marked = browser
        .wait_for("Please correct the marked fields", false)
        .await;
    assert!(marked.contains("aria-invalid=\"true\""));
    browser.check("checkout-errors").await;

    let email = format!("guest-{}@example.com", std::process::id());
    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &with_card("4242 4242 4242 4242", Some(&email)),
        )
        .await;
    browser.wait_for(">CONFIRMED<", true).await;
    browser.check("guest-confirmation").await;

    // The guest's order and its confirmation are theirs to see, without an account.
    browser.goto(&format!("{shop}/shop/orders")).await;
    browser.wait_for("CONFIRMED", false).await;
    browser.goto(&format!("{shop}/shop/mailbox")).await;
    let mailbox = browser.wait_for("is confirmed", true).await;
    assert!(mailbox.contains(&email), "{mailbox}");

    // An address that does not exist gets a page a person can read.
    let missing = reqwest::get(format!("{shop}/shop/no-such-thing"))
        .await
        .unwrap();
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(
        missing.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    browser.goto(&format!("{shop}/shop/no-such-thing")).await;
    browser.wait_for("There is no such page", false).await;
    browser.check("not-found").await;

    // With reviews stopped, the product page still renders, saying so.
    let stopped = comb.run(&["scale", "reviews=0"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    browser.goto(&product_url).await;
    let page = browser
        .wait_for("Reviews are unavailable right now", false)
        .await;
    assert!(page.contains("Add to cart"));
    browser.check("product-without-reviews").await;

    // On a phone's width the pages fit: nothing scrolls sideways.
    browser.client.set_window_size(390, 844).await.unwrap();
    for (name, url) in [
        ("phone-home", format!("{shop}/")),
        ("phone-product", product_url.clone()),
        ("phone-checkout", format!("{shop}/shop/checkout")),
    ] {
        browser.goto(&url).await;
        browser.wait_for("</footer>", false).await;
        let widths = browser
            .client
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .unwrap();
        let (page, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            page <= window,
            "{name}: {page} px wide in a {window} px window"
        );
        browser.check(name).await;
    }
    browser.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_declined_card_can_be_retried_from_the_keyboard() {
    let comb = Comb::up(&repo_topology());
    let shop = comb.gateway();
    let Some(browser) = browser("declined").await else {
        return;
    };

    browser
        .goto(&format!("{shop}/shop/browse?kind=video"))
        .await;
    browser.wait_for("<h1>Video</h1>", false).await;
    // The first Tab reaches the skip link, which shows itself and leads to the content.
    browser.press(Key::Tab).await;
    let skip = browser.focused("a.skip").await;
    assert_eq!(skip["matches"], true, "the skip link comes first: {skip}");
    assert_eq!(
        skip["visible"], true,
        "the skip link shows when focused: {skip}"
    );
    browser
        .tab_to("main ul.grid a[href^='/shop/products/']")
        .await;
    browser.press(Key::Enter).await;
    browser.wait_for("Add to cart", false).await;
    browser
        .tab_to("form[action='/shop/cart/items'] button")
        .await;
    browser.press(Key::Enter).await;
    browser.wait_for("Your cart", false).await;
    browser.tab_to("a[href='/shop/checkout']").await;
    browser.press(Key::Enter).await;
    browser.wait_for("Place order", false).await;

    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &with_card("4000 0000 0000 0002", Some("declined@example.com")),
        )
        .await;
    let declined = browser.wait_for(">CANCELLED<", true).await;
    assert!(declined.contains("Your card was declined"), "{declined}");
    browser.check("declined").await;

    // The decline says how to go on: back to the checkout with the cart still full.
    browser.tab_to("main a[href='/shop/checkout']").await;
    browser.press(Key::Enter).await;
    browser.wait_for("Place order", false).await;
    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &with_card("4242 4242 4242 4242", Some("declined@example.com")),
        )
        .await;
    browser.wait_for(">CONFIRMED<", true).await;
    browser.check("paid-after-decline").await;
    browser.client.clone().close().await.unwrap();
}
