//! The storefront in a real browser: Debian's Chromium driven through ChromeDriver, on the
//! whole system started by `comb up`. Each journey checks every page it passes for one
//! `h1`, labelled form fields, images with alt text and readable text contrast (WCAG AA),
//! and writes screenshots to `screenshots/` (ignored by git) for people to look at. One
//! journey shops with the keyboard alone where it matters: skip link, add to cart, retry.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
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
            // Previews are started by the test, with no user gesture to allow them.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required"],
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
                // WCAG 2 contrast of every element that shows text of its own, against the
                // first opaque background behind it.
                const rgb = s => { const v = s.match(/[\d.]+/g).map(Number); return { c: v.slice(0, 3), a: v.length > 3 ? v[3] : 1 }; };
                const luminance = c => {
                  const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
                  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
                };
                const backdrop = e => {
                  for (let n = e; n; n = n.parentElement) {
                    const bg = rgb(getComputedStyle(n).backgroundColor);
                    if (bg.a > 0.5) return bg.c;
                  }
                  return [255, 255, 255];
                };
                const low_contrast = [...document.querySelectorAll('body *')]
                  .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
                  .filter(e => e.getClientRects().length && !e.closest('.visually-hidden, .skip'))
                  .map(e => {
                    const fg = luminance(rgb(getComputedStyle(e).color).c), bg = luminance(backdrop(e));
                    return { text: e.textContent.trim().slice(0, 40), ratio: (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05) };
                  })
                  .filter(t => t.ratio < 4.5)
                  .map(t => `${t.text}: ${t.ratio.toFixed(2)}`);
                return {
                  h1: document.querySelectorAll('h1').length,
                  unlabelled,
                  without_alt: images.filter(i => !(i.getAttribute('alt') || '').trim()).length,
                  low_contrast,
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
        assert_eq!(
            report["low_contrast"],
            json!([]),
            "{name}: text contrast at least 4.5:1: {report}"
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

    /// Presses a key wherever the focus is, as a person at the keyboard would.
    async fn press(&self, key: Key) {
        let keys = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// What has the focus: whether it matches `css`, and how its focus is drawn.
    async fn focused(&self, css: &str) -> Value {
        self.client
            .execute(
                r#"
                const e = document.activeElement;
                const style = getComputedStyle(e);
                return { matches: e.matches(arguments[0]), outline: style.outlineStyle,
                         visible: e.getBoundingClientRect().left >= 0, element: e.outerHTML.slice(0, 120) };
                "#,
                vec![json!(css)],
            )
            .await
            .unwrap()
    }

    /// Tabs through the page until `css` has the focus; every stop on the way must show it.
    async fn tab_to(&self, css: &str) {
        for _ in 0..80 {
            self.press(Key::Tab).await;
            let focused = self.focused(css).await;
            assert_ne!(focused["outline"], "none", "the focus is drawn: {focused}");
            assert_eq!(
                focused["visible"], true,
                "the focus is on screen: {focused}"
            );
            if focused["matches"] == true {
                return;
            }
        }
        panic!("{css} cannot be reached with the Tab key");
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

#[tokio::test]
async fn music_and_video_previews_play_on_their_product_pages() {
    use crate::media::{
        ADMIN, admin_token, ffmpeg_present, first_product, master, settled, showing, upload,
        video_master,
    };
    if !ffmpeg_present() {
        return;
    }
    let comb = Comb::up_with_env(&repo_topology(), &ADMIN);
    let Some(browser) = browser("media").await else {
        return;
    };
    let token = admin_token(&comb).await;
    let scratch = tempfile::tempdir().unwrap();
    let sound = master(
        scratch.path(),
        "take.flac",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:duration=45",
            "-ac",
            "2",
        ],
    );
    let music = first_product(&comb, "music").await;
    let video = first_product(&comb, "video").await;
    let picture = video_master(scratch.path(), 6);
    let uploads = [
        (music.clone(), upload(&comb, &token, &music, &sound).await),
        (video.clone(), upload(&comb, &token, &video, &picture).await),
    ];
    for (product, accepted) in &uploads {
        let job = accepted["job"]["id"].as_str().unwrap();
        let done = settled(&comb, &token, job, Duration::from_secs(180)).await;
        assert_eq!(done["state"], "done", "{done}");
        showing(
            &comb,
            product,
            "preview",
            accepted["asset_id"].as_str().unwrap(),
        )
        .await;
    }
    let shop = comb.gateway();
    browser.goto(&format!("{shop}/")).await;
    browser.check("home-with-covers").await;
    for (product, element) in [(&music, "audio"), (&video, "video")] {
        browser
            .goto(&format!("{shop}/shop/products/{product}"))
            .await;
        browser.check(&format!("{element}-preview")).await;
        // Muted, a preview may play without a gesture; it must load and its clock move.
        let played = browser
            .client
            .execute_async(
                r#"
                const done = arguments[arguments.length - 1];
                const media = document.getElementById('preview');
                media.muted = true;
                const started = performance.now();
                media.play().catch(error => done({ error: String(error) }));
                const look = () => {
                  if (media.readyState >= 2 && media.currentTime > 0.3) {
                    done({ readyState: media.readyState, currentTime: media.currentTime, source: media.currentSrc });
                  } else if (performance.now() - started > 15000) {
                    done({ error: 'stuck', readyState: media.readyState, currentTime: media.currentTime, source: media.currentSrc, code: media.error && media.error.code });
                  } else {
                    setTimeout(look, 100);
                  }
                };
                look();
                "#,
                vec![],
            )
            .await
            .unwrap();
        assert!(
            played["error"].is_null(),
            "the {element} preview does not play: {played}"
        );
        assert!(played["readyState"].as_u64().unwrap() >= 2, "{played}");
        browser.check(&format!("{element}-playing")).await;
    }
}
