//! Music and video sold as downloads: a cart of downloads checks out with no address, no
//! stock and no shipment; its buyer (a customer or a guest) gets signed, expiring links on
//! the order and in the confirmation; anyone else, an expired or altered link, and a
//! refunded order's link are refused.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checkout::{
    DECLINED_CARD, GOOD_CARD, add, admin, checkout, customer, final_order, guest,
};
use crate::media::{first_product, fixture, made, showing};
use crate::{Options, System, problem};

on_each_system!(
    a_download_is_bought_without_an_address_and_opened_only_by_its_buyer,
    a_guest_downloads_with_their_order_and_links_expire,
    a_cart_with_something_to_ship_still_needs_an_address,
);

/// A music product sold as a download: an audio master uploaded and made.
async fn downloadable(system: &System) -> (String, String) {
    let token = admin(system).await;
    let scratch = tempfile::tempdir().unwrap();
    let master = fixture(
        scratch.path(),
        "album.wav",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:duration=8",
            "-ac",
            "2",
        ],
    );
    let (asset, accepted) = made(system, &token, "music", &master).await;
    let product = accepted["product_id"].as_str().unwrap().to_owned();
    let shown = showing(system, &product, "preview", &asset).await;
    assert_eq!(shown["media"]["downloadable"], true);
    (product, asset)
}

fn payment_only(email: Option<&str>) -> Value {
    let mut body = json!({"payment": {"card_number": GOOD_CARD, "exp_month": 12, "exp_year": 2099, "cvc": "123"}});
    if let Some(email) = email {
        body["email"] = json!(email);
    }
    body
}

/// The caller's first message of `kind`, once notifications has written it.
async fn message(system: &System, token: &str, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let messages: Value = system
            .get_as("/api/v1/messages", token)
            .await
            .json()
            .await
            .unwrap();
        let found = messages["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == kind)
            .cloned();
        if let Some(message) = found {
            return message;
        }
        assert!(Instant::now() < deadline, "no {kind} message: {messages}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn links(system: &System, token: &str, order: &str) -> reqwest::Response {
    system
        .get_as(&format!("/api/v1/orders/{order}/downloads"), token)
        .await
}

/// A file behind a signed link, once media has recorded the order that signs it.
async fn fetched(system: &System, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = system.get(url).await;
        if response.status() != 503 {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "the order is never recorded by media"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stock(system: &System, product: &str) -> Value {
    system.json(&format!("/api/v1/products/{product}")).await["stock"]["available"].clone()
}

async fn a_download_is_bought_without_an_address_and_opened_only_by_its_buyer(options: Options) {
    if !crate::media::ffmpeg_present() {
        return;
    }
    let system = System::start_with(options).await;
    let (product, asset) = downloadable(&system).await;
    let stock_before = stock(&system, &product).await;

    // In the cart, a download is one, whatever quantity is asked for.
    let buyer = customer(&system, "listener@example.com").await;
    add(&system, &buyer, &product, 3).await;
    let cart: Value = system
        .get_as("/api/v1/cart", &buyer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cart["items"][0]["digital"], true, "{cart}");
    assert_eq!(cart["items"][0]["quantity"], 1, "{cart}");

    // No address, no shipping, no shipment, no stock taken.
    let order = final_order(
        &system,
        &buyer,
        checkout(&system, &buyer, payment_only(None), None).await,
    )
    .await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["shipping"]["amount_minor"], 0);
    assert!(order["shipment"].is_null(), "{order}");
    assert_eq!(order["items"][0]["digital"], true);
    assert_eq!(stock(&system, &product).await, stock_before);
    let order_id = order["id"].as_str().unwrap();

    // The buyer's links open the full-length file, privately, as an attachment.
    let answer: Value = links(&system, &buyer, order_id).await.json().await.unwrap();
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{answer}");
    assert_eq!(items[0]["name"], "download.mp3");
    let url = items[0]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "/media/{asset}/download.mp3?order={order_id}&expires="
        )),
        "{url}"
    );
    let file = fetched(&system, &url).await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "audio/mpeg");
    assert_eq!(file.headers()["cache-control"], "private, no-store");
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(
        file.bytes().await.unwrap().len() as u64,
        items[0]["bytes"].as_u64().unwrap()
    );
    let part = system
        .http
        .get(system.url(&url))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);

    // The confirmation carries the links too.
    let confirmation = message(&system, &buyer, "order_confirmed").await;
    let body = confirmation["body"].as_str().unwrap();
    assert!(
        body.contains(&format!(
            "/media/{asset}/download.mp3?order={order_id}&expires="
        )),
        "{body}"
    );

    // Nobody else: another customer cannot get or use the buyer's links.
    let other = customer(&system, "someone-else@example.com").await;
    problem(links(&system, &other, order_id).await, 404).await;
    // No link, an altered one, or one stretched in time: refused.
    problem(
        system.get(&format!("/media/{asset}/download.mp3")).await,
        403,
    )
    .await;
    let mut altered = url.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    problem(system.get(&altered).await, 403).await;
    let stretched = url.replacen("&expires=", "&expires=9", 1);
    let refused = problem(system.get(&stretched).await, 403).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("not valid"),
        "{refused}"
    );
    let not_a_number = url.replacen("&expires=", "&expires=x", 1);
    problem(system.get(&not_a_number).await, 400).await;

    // A refund is an admin's: the buyer cannot, an unknown order is 404.
    let refund = |order: &str, token: &str| {
        system
            .http
            .post(system.url(&format!("/api/v1/admin/orders/{order}/refund")))
            .bearer_auth(token.to_owned())
            .send()
    };
    problem(refund(order_id, &buyer).await.unwrap(), 403).await;
    let admin_token = admin(&system).await;
    problem(refund("no-such-order", &admin_token).await.unwrap(), 404).await;
    // The refunded order is cancelled as `refunded`, its payment given back; asking again
    // answers the same.
    for _ in 0..2 {
        let refunded: Value = refund(order_id, &admin_token)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(refunded["status"], "CANCELLED", "{refunded}");
        assert_eq!(refunded["cancel_reason"], "refunded", "{refunded}");
        assert_eq!(refunded["payment"]["status"], "refunded", "{refunded}");
    }
    // Its files stop opening, and the buyer is told.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = system.get(&url).await;
        if response.status() == 403 {
            let body = problem(response, 403).await;
            assert!(
                body["detail"].as_str().unwrap().contains("cancelled"),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refunded order's link still opens"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let told = message(&system, &buyer, "order_cancelled").await;
    assert!(
        told["subject"].as_str().unwrap().contains("refunded"),
        "{told}"
    );
    // An order that is not confirmed cannot be refunded.
    add(&system, &buyer, &product, 1).await;
    let declined = final_order(
        &system,
        &buyer,
        checkout(
            &system,
            &buyer,
            json!({"payment": {"card_number": DECLINED_CARD, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(declined["status"], "CANCELLED", "{declined}");
    let refused = problem(
        refund(declined["id"].as_str().unwrap(), &admin_token)
            .await
            .unwrap(),
        409,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("only a confirmed order"),
        "{refused}"
    );
}

async fn a_guest_downloads_with_their_order_and_links_expire(options: Options) {
    if !crate::media::ffmpeg_present() {
        return;
    }
    let system = System::start_with(Options {
        download_link_seconds: Some(2),
        ..options
    })
    .await;
    let (product, _) = downloadable(&system).await;
    let visitor = guest(&system).await;
    add(&system, &visitor, &product, 1).await;
    // A guest names where the confirmation goes; still no address.
    let order = final_order(
        &system,
        &visitor,
        checkout(
            &system,
            &visitor,
            payment_only(Some("guest@example.com")),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let order_id = order["id"].as_str().unwrap();
    let answer: Value = links(&system, &visitor, order_id)
        .await
        .json()
        .await
        .unwrap();
    let url = answer["items"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(fetched(&system, &url).await.status(), 200);
    let stranger = guest(&system).await;
    problem(links(&system, &stranger, order_id).await, 404).await;
    // Links last two seconds here: after that, refused as expired; a fresh one works.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let expired = problem(system.get(&url).await, 403).await;
    assert!(
        expired["detail"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
    let fresh: Value = links(&system, &visitor, order_id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        system
            .get(fresh["items"][0]["url"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

async fn a_cart_with_something_to_ship_still_needs_an_address(options: Options) {
    if !crate::media::ffmpeg_present() {
        return;
    }
    let system = System::start_with(options).await;
    let (product, _) = downloadable(&system).await;
    let buyer = customer(&system, "mixed@example.com").await;
    add(&system, &buyer, &product, 1).await;
    let book = first_product(&system, "book").await;
    add(&system, &buyer, &book, 1).await;
    let refused = problem(
        checkout(&system, &buyer, payment_only(None), None).await,
        422,
    )
    .await;
    assert!(
        refused.to_string().contains("shipping_address"),
        "{refused}"
    );
    // With an address, the book ships and the download does not take stock.
    let body = crate::checkout::checkout_body(GOOD_CARD, None);
    let order = final_order(&system, &buyer, checkout(&system, &buyer, body, None).await).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert!(order["shipment"].is_object(), "{order}");
    let answer: Value = links(&system, &buyer, order["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["items"].as_array().unwrap().len(), 1, "{answer}");
    // An order with nothing to download has no downloads.
    add(&system, &buyer, &book, 1).await;
    let physical = final_order(
        &system,
        &buyer,
        checkout(
            &system,
            &buyer,
            crate::checkout::checkout_body(GOOD_CARD, None),
            None,
        )
        .await,
    )
    .await;
    problem(
        links(&system, &buyer, physical["id"].as_str().unwrap()).await,
        409,
    )
    .await;
}
