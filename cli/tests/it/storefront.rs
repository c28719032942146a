//! The storefront in a real browser: Debian's Chromium driven through ChromeDriver, on the
//! whole system started by `comb up`. Each journey checks every page it passes for one
//! `h1`, labelled form fields and images with alt text, and writes screenshots to
//! `screenshots/` (ignored by git) for people to look at.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::observability::{Killed, chromium, free_port, which};
use crate::{Comb, eventually, repo_topology, text};

/// A headless Chromium session; the driver stops with it.
struct Browser {
    client: Client,
    _driver: Killed,
    shots: PathBuf,
}

/// A browser, or `None` (and why) off CI when Chromium or ChromeDriver is missing.
async fn browser(journey: &str) -> Option<Browser> {
    let binary = chromium()?;
    let Some(driver) = which("chromedriver") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ChromeDriver is required on CI (.ci/run installs Debian's chromium-driver)"
        );
        eprintln!(
            "skipping the browser journey: no chromedriver on PATH (apt-get install chromium-driver)"
        );
        return None;
    };
    let port = free_port();
    let driver = Killed(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("ChromeDriver ready", Duration::from_secs(20), || async {
        let status: Value = http
            .get(format!("{url}/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["value"]["ready"] == true).then_some(())
    })
    .await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&url)
        .await
        .unwrap();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../screenshots")
        .join(journey);
    std::fs::create_dir_all(&shots).unwrap();
    Some(Browser {
        client,
        _driver: driver,
        shots,
    })
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Waits until the page shows `needle`, reloading it between looks.
    async fn wait_for(&self, needle: &str, reload: bool) -> String {
        eventually(
            &format!("the page to show {needle:?}"),
            Duration::from_secs(30),
            || async {
                let source = self.source().await;
                if source.contains(needle) {
                    return Some(source);
                }
                if reload {
                    self.client.refresh().await.ok()?;
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None
            },
        )
        .await
    }

    /// Checks the page's basic accessibility and keeps a screenshot of it.
    async fn check(&self, name: &str) {
        let report = self
            .client
            .execute(
                r#"
                const fields = [...document.querySelectorAll('input, select, textarea')]
                  .filter(e => !['hidden', 'submit', 'button'].includes(e.type));
                const unlabelled = fields
                  .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`))
                               && !e.getAttribute('aria-label') && !e.closest('label'))
                  .map(e => e.name || e.outerHTML);
                const images = [...document.querySelectorAll('img')];
                return {
                  h1: document.querySelectorAll('h1').length,
                  unlabelled,
                  without_alt: images.filter(i => !(i.getAttribute('alt') || '').trim()).length,
                  lang: document.documentElement.lang,
                  title: document.title,
                };
                "#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(report["h1"], 1, "{name}: one h1 per page: {report}");
        assert_eq!(
            report["unlabelled"],
            json!([]),
            "{name}: every field labelled: {report}"
        );
        assert_eq!(
            report["without_alt"], 0,
            "{name}: every image has alt text: {report}"
        );
        assert_eq!(report["lang"], "en", "{name}: {report}");
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"))
            .click()
            .await
            .unwrap();
    }

    async fn fill(&self, form: &str, fields: &[(&str, &str)]) {
        let form = self.client.form(Locator::Css(form)).await.unwrap();
        for (name, value) in fields {
            form.set_by_name(name, value).await.unwrap();
        }
        form.submit().await.unwrap();
    }
}

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
async fn a_guest_is_declined_then_pays_and_pages_outlive_reviews() {
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

    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &with_card("4000 0000 0000 0002", Some("guest@example.com")),
        )
        .await;
    let declined = browser.wait_for(">CANCELLED<", true).await;
    assert!(declined.contains("Your card was declined"), "{declined}");
    browser.check("declined").await;

    browser.click("a[href='/shop/checkout']").await;
    browser.wait_for("Place order", false).await;
    browser
        .fill(
            "form[method='post'][action='/shop/checkout']",
            &with_card("4242 4242 4242 4242", Some("guest@example.com")),
        )
        .await;
    browser.wait_for(">CONFIRMED<", true).await;

    // With reviews stopped, the product page still renders, saying so.
    let stopped = comb.run(&["scale", "reviews=0"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    browser.goto(&product_url).await;
    let page = browser
        .wait_for("Reviews are unavailable right now", false)
        .await;
    assert!(page.contains("Add to cart"));
    browser.check("product-without-reviews").await;
    browser.client.clone().close().await.unwrap();
}
