//! Product media through the gateway: uploads of each kind made into renditions by a real
//! worker running ffmpeg, every file checked with ffprobe, files served with ranges, and
//! every way an upload can be wrong. Fixtures are made at test time with ffmpeg's `lavfi`
//! sources; nothing binary is kept in the repository.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use comb_kit::storage::sql;
use serde_json::Value;

use crate::checkout::admin;
use crate::{Options, System, problem};

on_each_system!(
    an_image_becomes_webp_and_jpeg_at_three_widths,
    audio_becomes_previews_and_a_download_of_the_stated_lengths,
    video_becomes_mp4_renditions_an_hls_ladder_a_poster_and_a_preview,
    every_product_gets_a_drawn_cover_until_one_is_uploaded,
    a_range_request_gets_exactly_those_bytes,
    a_corrupt_master_fails_its_job_with_a_reason_and_the_product_still_shows,
    uploads_that_are_too_large_of_the_wrong_type_or_not_an_admins_are_refused,
    a_job_whose_worker_vanishes_mid_transcode_is_done_once_by_another,
    media_keeps_its_files_in_an_s3_bucket_shared_with_its_worker,
);

/// A system to try media on: its admin's token and a scratch directory for fixtures.
pub(crate) struct Lab {
    pub system: System,
    pub token: String,
    pub scratch: tempfile::TempDir,
}

impl Lab {
    /// None (the test skips, saying why) where ffmpeg is missing, outside CI.
    pub(crate) async fn start(options: Options) -> Option<Self> {
        if !ffmpeg_present() {
            return None;
        }
        let system = System::start_with(options).await;
        let token = admin(&system).await;
        Some(Self {
            system,
            token,
            scratch: tempfile::tempdir().unwrap(),
        })
    }
}

/// Whether ffmpeg is here; without it (outside CI) the media tests say so and skip.
pub(crate) fn ffmpeg_present() -> bool {
    let present = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !present {
        assert!(
            std::env::var("CI").is_err(),
            "ffmpeg is missing; CI installs it (.ci/run)"
        );
        eprintln!("ffmpeg is not installed here: the media tests skip");
    }
    present
}

/// A file made by ffmpeg from `args` (lavfi sources), in `directory`.
pub(crate) fn fixture(directory: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = directory.join(name);
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg made no {name}");
    path
}

/// ffprobe's description of a file.
fn probe(path: &Path) -> Value {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe cannot read {}",
        path.display()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn seconds(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn stream<'a>(probe: &'a Value, kind: &str) -> &'a Value {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|stream| stream["codec_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream in {probe}"))
}

pub(crate) async fn first_product(system: &System, kind: &str) -> String {
    let page = system
        .json(&format!("/api/v1/products?kind={kind}&limit=1"))
        .await;
    page["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn upload(
    system: &System,
    token: &str,
    product: &str,
    body: Vec<u8>,
    name: &str,
) -> reqwest::Response {
    system
        .http
        .post(system.url(&format!("/api/v1/admin/products/{product}/media")))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .header(
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Polls a job until it is no longer queued or running.
async fn settled(system: &System, token: &str, job: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job: Value = system
            .get_as(&format!("/api/v1/admin/media/jobs/{job}"), token)
            .await
            .json()
            .await
            .unwrap();
        if job["state"] != "queued" && job["state"] != "running" {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish in time: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An asset's renditions as media recorded them: name, file on disk, public.
async fn renditions(system: &System, asset: &str) -> Vec<(String, PathBuf, bool, String)> {
    let rows = sql::query("SELECT name, sha256, public, content_type FROM renditions WHERE asset_id = $1 ORDER BY name")
        .bind(asset)
        .fetch_all(&system.connect("media").await)
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let sha256: String = row.try_get("sha256").unwrap();
            let path = system
                .media_dir
                .path()
                .join("blobs")
                .join("sha256")
                .join(&sha256[..2])
                .join(&sha256);
            (
                row.try_get("name").unwrap(),
                path,
                row.try_get("public").unwrap(),
                row.try_get("content_type").unwrap(),
            )
        })
        .collect()
}

/// The product as the API shows it once its media shows `asset` in `role` (the catalog
/// learns of it from media's events).
pub(crate) async fn showing(system: &System, product: &str, role: &str, asset: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = system.json(&format!("/api/v1/products/{product}")).await;
        if shown["media"][role]["asset_id"] == asset {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog never showed {asset} as {role}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The storefront's page of a product.
async fn page(system: &System, product: &str) -> String {
    let page = system.get(&format!("/shop/products/{product}")).await;
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

/// Uploads `file` for a product of `kind` and waits for its job to be done.
pub(crate) async fn made(system: &System, token: &str, kind: &str, file: &Path) -> (String, Value) {
    let product = first_product(system, kind).await;
    let response = upload(
        system,
        token,
        &product,
        std::fs::read(file).unwrap(),
        "master",
    )
    .await;
    if response.status() != 202 {
        panic!("{}: {}", response.status(), response.text().await.unwrap());
    }
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/api/v1/admin/media/jobs/")
    );
    let accepted: Value = response.json().await.unwrap();
    let job = settled(
        system,
        token,
        accepted["job"]["id"].as_str().unwrap(),
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["percent"], 100);
    let mut accepted = accepted;
    accepted["product_id"] = Value::String(product);
    (accepted["asset_id"].as_str().unwrap().to_owned(), accepted)
}

async fn an_image_becomes_webp_and_jpeg_at_three_widths(options: Options) {
    let Some(Lab {
        system,
        token,
        scratch,
    }) = Lab::start(options).await
    else {
        return;
    };
    let master = fixture(
        scratch.path(),
        "cover.png",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=800x600",
            "-frames:v",
            "1",
        ],
    );
    let (asset, accepted) = made(&system, &token, "book", &master).await;
    assert_eq!(accepted["kind"], "image");
    assert_eq!(accepted["content_type"], "image/png");
    let files = renditions(&system, &asset).await;
    let names: Vec<&str> = files.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "w160.jpg",
            "w160.webp",
            "w320.jpg",
            "w320.webp",
            "w640.jpg",
            "w640.webp"
        ]
    );
    for (name, path, public, _) in &files {
        assert!(public, "{name} is public");
        let found = probe(path);
        let picture = stream(&found, "video");
        let width: u64 = name[1..name.find('.').unwrap()].parse().unwrap();
        assert_eq!(picture["width"], width, "{name}");
        assert_eq!(
            picture["height"],
            width * 600 / 800,
            "{name} keeps the aspect ratio"
        );
        let codec = if name.ends_with(".webp") {
            "webp"
        } else {
            "mjpeg"
        };
        assert_eq!(picture["codec_name"], codec, "{name}");
    }
    // Served as it was checked, cached for good.
    let response = system.get(&format!("/media/{asset}/w320.webp")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/webp");
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let served = response.bytes().await.unwrap();
    assert_eq!(served, std::fs::read(&files[3].1).unwrap());
    let again = system
        .http
        .get(system.url(&format!("/media/{asset}/w320.webp")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    // The shop shows it, in every width, WebP where the browser takes it.
    let product = accepted["product_id"].as_str().unwrap();
    let shown = showing(&system, product, "cover", &asset).await;
    assert_eq!(
        shown["media"]["cover"]["files"].as_array().unwrap().len(),
        6
    );
    let html = page(&system, product).await;
    assert!(
        html.contains(&format!("/media/{asset}/w320.webp 320w")),
        "{html}"
    );
    assert!(html.contains(r#"<source type="image/webp""#), "{html}");
    assert!(
        html.contains(&format!("/media/{asset}/w640.jpg 640w")),
        "{html}"
    );
    assert!(html.contains("alt=\"Cover of "), "{html}");
}

async fn audio_becomes_previews_and_a_download_of_the_stated_lengths(options: Options) {
    let Some(Lab {
        system,
        token,
        scratch,
    }) = Lab::start(options).await
    else {
        return;
    };
    let master = fixture(
        scratch.path(),
        "take.wav",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=40",
            "-ac",
            "2",
        ],
    );
    let (asset, accepted) = made(&system, &token, "music", &master).await;
    assert_eq!(accepted["kind"], "audio");
    let files = renditions(&system, &asset).await;
    let expected = [
        ("download.mp3", "mp3", "mp3", 40.0, false),
        ("preview.m4a", "mp4", "aac", 30.0, true),
        ("preview.webm", "webm", "opus", 30.0, true),
    ];
    assert_eq!(files.len(), expected.len());
    for ((name, path, public, _), (want_name, container, codec, length, want_public)) in
        files.iter().zip(expected)
    {
        assert_eq!(name, want_name);
        assert_eq!(*public, want_public, "{name}");
        let found = probe(path);
        assert!(
            found["format"]["format_name"]
                .as_str()
                .unwrap()
                .contains(container),
            "{name}: {found}"
        );
        assert_eq!(stream(&found, "audio")["codec_name"], codec, "{name}");
        assert!(
            (seconds(&found) - length).abs() <= 0.5,
            "{name}: {} s",
            seconds(&found)
        );
    }
    // The full length is sold, not given away.
    let refused = system.get(&format!("/media/{asset}/download.mp3")).await;
    problem(refused, 403).await;
    // The product page plays the preview, with no script.
    let product = accepted["product_id"].as_str().unwrap();
    let shown = showing(&system, product, "preview", &asset).await;
    assert_eq!(shown["media"]["downloadable"], true);
    let names: Vec<&str> = shown["media"]["preview"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["preview.m4a", "preview.webm"],
        "only public files are listed"
    );
    let html = page(&system, product).await;
    assert!(html.contains("<audio id=\"preview\" controls"), "{html}");
    assert!(
        html.contains(&format!(
            r#"<source src="/media/{asset}/preview.m4a" type="audio/mp4">"#
        )),
        "{html}"
    );
}

async fn video_becomes_mp4_renditions_an_hls_ladder_a_poster_and_a_preview(options: Options) {
    let Some(Lab {
        system,
        token,
        scratch,
    }) = Lab::start(options).await
    else {
        return;
    };
    let master = fixture(
        scratch.path(),
        "clip.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1280x720:rate=24:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
    let (asset, accepted) = made(&system, &token, "video", &master).await;
    assert_eq!(accepted["kind"], "video");
    let files = renditions(&system, &asset).await;
    let find = |wanted: &str| {
        files
            .iter()
            .find(|(name, ..)| name == wanted)
            .unwrap_or_else(|| panic!("no {wanted} in {files:?}"))
    };
    for (name, height, public) in [
        ("360p.mp4", 360, false),
        ("720p.mp4", 720, false),
        ("preview.mp4", 360, true),
    ] {
        let (_, path, is_public, _) = find(name);
        assert_eq!(*is_public, public, "{name}");
        let found = probe(path);
        assert_eq!(stream(&found, "video")["codec_name"], "h264", "{name}");
        assert_eq!(stream(&found, "video")["height"], height, "{name}");
        assert_eq!(stream(&found, "video")["width"], height * 16 / 9, "{name}");
        assert_eq!(stream(&found, "audio")["codec_name"], "aac", "{name}");
        assert!((seconds(&found) - 4.0).abs() <= 0.5, "{name}");
    }
    let poster = probe(&find("poster.jpg").1);
    assert_eq!(stream(&poster, "video")["height"], 720);
    let master_playlist = std::fs::read_to_string(&find("hls.m3u8").1).unwrap();
    assert!(
        master_playlist.contains("hls-360p.m3u8") && master_playlist.contains("hls-720p.m3u8"),
        "{master_playlist}"
    );
    // The ladder plays through the gateway: playlists and segments by their names.
    let playlist = system.get(&format!("/media/{asset}/hls-360p.m3u8")).await;
    assert_eq!(
        playlist.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let playlist = playlist.text().await.unwrap();
    let segment = playlist.lines().find(|line| line.ends_with(".ts")).unwrap();
    let served = system.get(&format!("/media/{asset}/{segment}")).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "video/mp2t");
    let probed = scratch.path().join("served.m3u8");
    std::fs::write(&probed, &playlist).unwrap();
    for line in playlist.lines().filter(|line| line.ends_with(".ts")) {
        let bytes = system
            .get(&format!("/media/{asset}/{line}"))
            .await
            .bytes()
            .await
            .unwrap();
        std::fs::write(scratch.path().join(line), bytes).unwrap();
    }
    let ladder = probe(&probed);
    assert!((seconds(&ladder) - 4.0).abs() <= 0.5, "{ladder}");
    let product = accepted["product_id"].as_str().unwrap();
    showing(&system, product, "preview", &asset).await;
    let html = page(&system, product).await;
    assert!(
        html.contains(&format!(r#"poster="/media/{asset}/poster.jpg""#)),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            r#"<source src="/media/{asset}/hls.m3u8" type="application/vnd.apple.mpegurl">"#
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            r#"<source src="/media/{asset}/preview.mp4" type="video/mp4">"#
        )),
        "{html}"
    );
}

async fn every_product_gets_a_drawn_cover_until_one_is_uploaded(options: Options) {
    let system = System::start_with(options).await;
    let page_of_books = system.json("/api/v1/products?kind=book&limit=5").await;
    let product = page_of_books["items"][0]["id"].as_str().unwrap().to_owned();
    let title = page_of_books["items"][0]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let cover = loop {
        let shown = system.json(&format!("/api/v1/products/{product}")).await;
        if let Some(url) = shown["media"]["cover"]["files"][0]["url"].as_str() {
            break url.to_owned();
        }
        assert!(Instant::now() < deadline, "no drawn cover: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cover.ends_with("/cover.svg"), "{cover}");
    let drawn = system.get(&cover).await;
    assert_eq!(drawn.status(), 200);
    assert_eq!(drawn.headers()["content-type"], "image/svg+xml");
    let svg = drawn.text().await.unwrap();
    let first_word = title
        .split_whitespace()
        .next()
        .unwrap()
        .replace('&', "&amp;");
    assert!(
        svg.contains(&first_word),
        "the cover shows the title {title}: {svg}"
    );
    // Lists carry covers too, so the shelves show them.
    let listed = system.json("/api/v1/products?kind=book&limit=5").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["media"]["cover"].is_object()),
        "{listed}"
    );
    let html = system.get("/").await.text().await.unwrap();
    assert!(html.contains("/cover.svg"), "{html}");
}

async fn a_range_request_gets_exactly_those_bytes(options: Options) {
    let Some(Lab {
        system,
        token,
        scratch,
    }) = Lab::start(options).await
    else {
        return;
    };
    let master = fixture(
        scratch.path(),
        "cover.png",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x640",
            "-frames:v",
            "1",
        ],
    );
    let (asset, _) = made(&system, &token, "book", &master).await;
    let whole = system
        .get(&format!("/media/{asset}/w640.jpg"))
        .await
        .bytes()
        .await
        .unwrap();
    let size = whole.len();
    assert!(size > 300);
    let ranged = |range: String| {
        let request = system
            .http
            .get(system.url(&format!("/media/{asset}/w640.jpg")))
            .header("range", range);
        async move { request.send().await.unwrap() }
    };
    let part = ranged("bytes=100-299".into()).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-299/{size}").as_str()
    );
    assert_eq!(part.headers()["content-length"], "200");
    assert_eq!(part.bytes().await.unwrap(), whole[100..300]);
    let tail = ranged("bytes=-50".into()).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), whole[size - 50..]);
    let refused = ranged(format!("bytes={size}-")).await;
    assert_eq!(
        refused.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    problem(refused, 416).await;
    // Names that are not renditions never reach a path.
    for path in [
        format!("/media/{asset}/..%2F..%2Fetc%2Fpasswd"),
        format!("/media/{asset}/W640.jpg"),
        "/media/..%2Fblobs/w640.jpg".to_owned(),
        format!("/media/{asset}/nothing.jpg"),
    ] {
        problem(system.get(&path).await, 404).await;
    }
}

async fn a_corrupt_master_fails_its_job_with_a_reason_and_the_product_still_shows(
    options: Options,
) {
    if !ffmpeg_present() {
        return;
    }
    let system = System::start_with(options).await;
    let token = admin(&system).await;
    let product = first_product(&system, "music").await;
    // A WAV header and then noise: sniffed as audio, but no decoder can read it.
    let mut corrupt = b"RIFF\xff\xff\xff\x7fWAVEfmt ".to_vec();
    corrupt.extend((0..64_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let response = upload(&system, &token, &product, corrupt, "broken.wav").await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let job = settled(
        &system,
        &token,
        accepted["job"]["id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "an undecodable input is not tried again: {job}"
    );
    assert!(
        job["failure"]
            .as_str()
            .unwrap()
            .contains("cannot be decoded"),
        "{job}"
    );
    let page = system.get(&format!("/shop/products/{product}")).await;
    assert_eq!(page.status(), 200);
    // An admin can ask for it again (it fails again, with the same reason).
    let retried = system
        .send_as(
            reqwest::Method::POST,
            &format!(
                "/api/v1/admin/media/jobs/{}/retry",
                job["id"].as_str().unwrap()
            ),
            &token,
            None,
        )
        .await;
    assert_eq!(retried.status(), 200);
}

async fn uploads_that_are_too_large_of_the_wrong_type_or_not_an_admins_are_refused(
    options: Options,
) {
    let system = System::start_with(options).await;
    let token = admin(&system).await;
    let product = first_product(&system, "book").await;
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n".repeat(100);
    let refused = upload(&system, &token, &product, pdf, "cover.png").await;
    let body = problem(refused, 415).await;
    assert!(
        body["detail"].as_str().unwrap().contains("not an image"),
        "{body}"
    );
    // The name says PNG, the bytes say otherwise; the bytes win.
    let svg =
        br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    problem(upload(&system, &token, &product, svg, "x.png").await, 415).await;
    problem(
        upload(
            &system,
            &token,
            "no-such-product",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            "a.png",
        )
        .await,
        404,
    )
    .await;
    problem(
        upload(
            &system,
            "not a token",
            &product,
            b"\x89PNG\r\n\x1a\n".to_vec(),
            "a.png",
        )
        .await,
        401,
    )
    .await;
    // Over the limit (32 MiB here): refused from the declared length, or, sent without
    // one, once the bytes pass the limit, and nothing is kept.
    let over = vec![0u8; 33 * 1024 * 1024];
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&over);
    problem(
        upload(&system, &token, &product, png.clone(), "big.png").await,
        413,
    )
    .await;
    let chunks: Vec<Result<http_body::Frame<axum::body::Bytes>, std::io::Error>> = png
        .chunks(1024 * 1024)
        .map(|chunk| {
            Ok(http_body::Frame::data(axum::body::Bytes::copy_from_slice(
                chunk,
            )))
        })
        .collect();
    let streamed = system
        .http
        .post(system.url(&format!("/api/v1/admin/products/{product}/media")))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(
            futures_util::stream::iter(chunks),
        )))
        .send()
        .await
        .unwrap();
    problem(streamed, 413).await;
    let assets: i64 = sql::query_scalar("SELECT COUNT(*) FROM assets WHERE origin = 'upload'")
        .fetch_one(&system.connect("media").await)
        .await
        .unwrap();
    assert_eq!(assets, 0, "no refused upload left an asset");
    // Media learns of the broken call a moment after the gateway answers (and may be
    // drawing covers meanwhile): temporary files go within seconds.
    let incoming = system.media_dir.path().join("blobs").join("incoming");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&incoming)
        .map(|entries| entries.count())
        .unwrap_or(0)
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "a refused upload left part of a file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_job_whose_worker_vanishes_mid_transcode_is_done_once_by_another(options: Options) {
    let Some(Lab {
        mut system,
        token,
        scratch,
    }) = Lab::start(options).await
    else {
        return;
    };
    let master = fixture(
        scratch.path(),
        "long.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1280x720:rate=24:duration=20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let product = first_product(&system, "video").await;
    let accepted: Value = upload(
        &system,
        &token,
        &product,
        std::fs::read(&master).unwrap(),
        "long.mp4",
    )
    .await
    .json()
    .await
    .unwrap();
    let job_id = accepted["job"]["id"].as_str().unwrap().to_owned();
    // Wait until the worker is transcoding, then take it away without a word (its
    // lease stays, as after SIGKILL).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = system
            .get_as(&format!("/api/v1/admin/media/jobs/{job_id}"), &token)
            .await
            .json()
            .await
            .unwrap();
        if job["state"] == "running" && job["percent"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the job never started: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    system.media_worker.stop().await;
    let orphaned: Value = system
        .get_as(&format!("/api/v1/admin/media/jobs/{job_id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(orphaned["state"], "running");
    system.media_worker.restart().await;
    let job = settled(&system, &token, &job_id, Duration::from_secs(240)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let files = renditions(&system, accepted["asset_id"].as_str().unwrap()).await;
    let mut names: Vec<&str> = files.iter().map(|(name, ..)| name.as_str()).collect();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "each rendition recorded once");
    assert!(names.contains(&"720p.mp4"));
}

async fn media_keeps_its_files_in_an_s3_bucket_shared_with_its_worker(options: Options) {
    if !ffmpeg_present() {
        return;
    }
    let Some(bucket) = comb_testkit::TestBucket::start().await else {
        return;
    };
    let system = System::start_with(Options {
        bucket: Some((bucket.endpoint.clone(), bucket.location("media"))),
        ..options
    })
    .await;
    let token = admin(&system).await;
    let scratch = tempfile::tempdir().unwrap();
    let master = fixture(
        scratch.path(),
        "cover.png",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=400x600",
            "-frames:v",
            "1",
        ],
    );
    let (asset, _) = made(&system, &token, "book", &master).await;
    let served = system.get(&format!("/media/{asset}/w320.jpg")).await;
    assert_eq!(served.status(), 200);
    let file = scratch.path().join("served.jpg");
    std::fs::write(&file, served.bytes().await.unwrap()).unwrap();
    let found = probe(&file);
    assert_eq!(stream(&found, "video")["width"], 320);
    assert_eq!(stream(&found, "video")["height"], 480);
    let part = system
        .http
        .get(system.url(&format!("/media/{asset}/w320.jpg")))
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().len(), 4);
    // Nothing went to the local directory: the bucket holds the files.
    assert!(
        !system
            .media_dir
            .path()
            .join("blobs")
            .join("sha256")
            .exists()
    );
}
