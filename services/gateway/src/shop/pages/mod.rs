//! The storefront's pages and form handlers, one module per family of pages; what they
//! share (the page frame, product cards, the catalog client) is here.

pub(super) mod account;
pub(super) mod cart;
pub(super) mod catalog;
pub(super) mod checkout;
pub(super) mod orders;

use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::{Visitor, layout};
use crate::GatewayState;
use crate::catalog::Product;

/// A product's cover: its uploaded image in the widths media made (WebP where the browser
/// takes it, JPEG otherwise), its drawn cover, or, before media has either, a plain one
/// per kind. `sizes` says how wide the page shows it.
fn cover(product: &Product, sizes: &str) -> Markup {
    let alt = format!("Cover of {}", product.title);
    let files = product
        .media
        .as_ref()
        .and_then(|media| media.cover.as_ref())
        .map(|cover| cover.files.as_slice())
        .unwrap_or_default();
    let widths = |extension: &str| -> Vec<(&crate::catalog::MediaFile, String)> {
        files
            .iter()
            .filter(|file| file.name.ends_with(extension) && file.width > 0)
            .map(|file| (file, format!("{} {}w", file.url, file.width)))
            .collect()
    };
    let jpegs = widths(".jpg");
    let webps = widths(".webp");
    if let Some((middle, _)) = jpegs.get(jpegs.len() / 2) {
        let srcset = |list: &[(&crate::catalog::MediaFile, String)]| {
            list.iter()
                .map(|(_, entry)| entry.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return html! {
            picture {
                @if !webps.is_empty() {
                    source type="image/webp" srcset=(srcset(&webps)) sizes=(sizes);
                }
                img.cover src=(middle.url) srcset=(srcset(&jpegs)) sizes=(sizes) alt=(alt) width=(middle.width) height=(middle.height) loading="lazy";
            }
        };
    }
    if let Some(drawn) = files.iter().find(|file| file.name.ends_with(".svg")) {
        return html! {
            img.cover src=(drawn.url) alt=(alt) width=(drawn.width) height=(drawn.height) loading="lazy";
        };
    }
    let kind = product.kind.label().to_ascii_lowercase();
    html! {
        img.cover src={"/shop/covers/" (kind) ".svg"} alt=(alt) width="300" height="400";
    }
}

/// The preview player of a product with audio or video: HLS first where the browser plays
/// it, then MP4 or WebM; plain HTML controls, no script.
fn preview_player(product: &Product) -> Option<Markup> {
    let preview = product.media.as_ref()?.preview.as_ref()?;
    let file = |name: &str| preview.files.iter().find(|file| file.name == name);
    let label = format!("Preview of {}", product.title);
    match preview.kind.as_str() {
        "audio" => Some(html! {
            figure.preview {
                figcaption { "Listen to a preview" }
                audio #preview controls preload="metadata" aria-label=(label) {
                    @if let Some(m4a) = file("preview.m4a") { source src=(m4a.url) type="audio/mp4"; }
                    @if let Some(webm) = file("preview.webm") { source src=(webm.url) type="audio/webm"; }
                    "Your browser cannot play this preview."
                }
            }
        }),
        "video" => {
            let mp4 = file("preview.mp4")?;
            Some(html! {
                figure.preview {
                    figcaption { "Watch a preview" }
                    video #preview controls preload="metadata" playsinline aria-label=(label)
                        poster=[file("poster.jpg").map(|poster| poster.url.as_str())]
                        width=(mp4.width) height=(mp4.height) {
                        @if let Some(hls) = file("hls.m3u8") { source src=(hls.url) type="application/vnd.apple.mpegurl"; }
                        source src=(mp4.url) type="video/mp4";
                        "Your browser cannot play this preview."
                    }
                }
            })
        }
        _ => None,
    }
}

fn product_card(product: &Product) -> Markup {
    html! {
        li.card {
            a href={"/shop/products/" (product.id)} {
                (cover(product, "(max-width: 600px) 45vw, 200px"))
                h3 { (product.title) }
            }
            p.muted { (product.creators.join(", ")) " · " (product.kind.label()) }
            p.price { (product.price) }
        }
    }
}

async fn cart_count(state: &GatewayState, visitor: &Visitor) -> Option<i64> {
    crate::backend::cart::count(state, visitor.owner()?).await
}

async fn page(state: &GatewayState, visitor: &Visitor, title: &str, body: Markup) -> Response {
    let count = cart_count(state, visitor).await;
    axum::response::Html(layout(title, visitor, count, body).into_string()).into_response()
}

fn field(
    name: &str,
    label: &str,
    value: &str,
    kind: &str,
    autocomplete: &str,
    errors: &[(String, String)],
) -> Markup {
    let message = errors
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, m)| m);
    let id = format!("field-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) value=(value) autocomplete=(autocomplete)
                aria-invalid=[message.map(|_| "true")]
                aria-describedby=[message.map(|_| format!("{id}-message"))];
            @if let Some(message) = message {
                p.message id={(id) "-message"} { (message) }
            }
        }
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
