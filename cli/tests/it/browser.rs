//! A headless Chromium for the system tests: Debian's Chromium driven through ChromeDriver.
//! Each page a test checks is held to one `h1`, labelled form fields, images with alt text
//! and readable text contrast (WCAG AA), and kept as a screenshot under `screenshots/`
//! (ignored by git) for people to look at.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::eventually;
use crate::observability::{Killed, chromium, free_port, which};

/// A headless Chromium session; the driver stops with it.
pub(crate) struct Browser {
    pub(crate) client: Client,
    _driver: Killed,
    shots: PathBuf,
}

/// A browser, or `None` (and why) off CI when Chromium or ChromeDriver is missing.
pub(crate) async fn browser(journey: &str) -> Option<Browser> {
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
    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub(crate) async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Waits until the page shows `needle`, reloading it between looks.
    pub(crate) async fn wait_for(&self, needle: &str, reload: bool) -> String {
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
    pub(crate) async fn check(&self, name: &str) {
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

    pub(crate) async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"))
            .click()
            .await
            .unwrap();
    }

    /// Presses a key wherever the focus is, as a person at the keyboard would.
    pub(crate) async fn press(&self, key: Key) {
        let keys = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// What has the focus: whether it matches `css`, and how its focus is drawn.
    pub(crate) async fn focused(&self, css: &str) -> Value {
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
    pub(crate) async fn tab_to(&self, css: &str) {
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

    pub(crate) async fn fill(&self, form: &str, fields: &[(&str, &str)]) {
        let form = self.client.form(Locator::Css(form)).await.unwrap();
        for (name, value) in fields {
            form.set_by_name(name, value).await.unwrap();
        }
        form.submit().await.unwrap();
    }
}
