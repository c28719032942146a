//! Media under `comb up`: an uploaded video is transcoded by a media worker process, the
//! worker is SIGKILLed mid-transcode, and the job is still done, once, by the worker the
//! launcher starts in its place; the catalog learns of the ready media through events and
//! the dashboard's media page shows the job; in headless Chromium, the music and video
//! previews on their product pages play.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{Comb, eventually, repo_topology};

pub(crate) const ADMIN_EMAIL: &str = "media-admin@comb.example";
pub(crate) const ADMIN_PASSWORD: &str = "a media admin password";

/// The settings that make the launcher's users service create the admin.
pub(crate) const ADMIN: [(&str, &str); 2] = [
    ("COMB_ADMIN_EMAIL", ADMIN_EMAIL),
    ("COMB_ADMIN_PASSWORD", ADMIN_PASSWORD),
];

/// Whether ffmpeg is here; on CI it must be.
pub(crate) fn ffmpeg_present() -> bool {
    if Command::new("ffmpeg").arg("-version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "ffmpeg is missing; CI installs it (.ci/run)"
    );
    eprintln!("ffmpeg is not installed here: the media system tests skip");
    false
}

/// The admin's token (the system is started with [`ADMIN`]).
pub(crate) async fn admin_token(comb: &Comb) -> String {
    let login: Value = comb
        .http
        .post(format!("{}/api/v1/auth/login", comb.gateway()))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_owned()
}

/// A master made by ffmpeg from `args` (lavfi sources).
pub(crate) fn master(directory: &Path, name: &str, args: &[&str]) -> PathBuf {
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

/// A video master of `seconds` at 720p with sound.
pub(crate) fn video_master(directory: &Path, seconds: u32) -> PathBuf {
    let picture = format!("testsrc=size=1280x720:rate=24:duration={seconds}");
    let sound = format!("sine=duration={seconds}");
    master(
        directory,
        "master.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            &picture,
            "-f",
            "lavfi",
            "-i",
            &sound,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    )
}

/// The first product of `kind`.
pub(crate) async fn first_product(comb: &Comb, kind: &str) -> String {
    let products: Value = comb
        .get(&format!("/api/v1/products?kind={kind}&limit=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    products["items"][0]["id"].as_str().unwrap().to_owned()
}

/// Uploads `file` for `product`: the upload's answer (asset and job).
pub(crate) async fn upload(comb: &Comb, token: &str, product: &str, file: &Path) -> Value {
    comb.http
        .post(format!(
            "{}/api/v1/admin/products/{product}/media",
            comb.gateway()
        ))
        .bearer_auth(token)
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A job as the admin API shows it.
async fn job(comb: &Comb, token: &str, job: &str) -> Option<Value> {
    let url = format!("{}/api/v1/admin/media/jobs/{job}", comb.gateway());
    comb.http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The job once it is neither queued nor running.
pub(crate) async fn settled(comb: &Comb, token: &str, id: &str, within: Duration) -> Value {
    eventually("the job to finish", within, || async {
        job(comb, token, id)
            .await
            .filter(|job| job["state"] != "running" && job["state"] != "queued")
    })
    .await
}

/// The product once the catalog shows `asset` as its `role` (cover or preview).
pub(crate) async fn showing(comb: &Comb, product: &str, role: &str, asset: &str) -> Value {
    eventually(
        "the catalog showing the media",
        Duration::from_secs(30),
        || async {
            let shown: Value = comb
                .get(&format!("/api/v1/products/{product}"))
                .await?
                .json()
                .await
                .ok()?;
            (shown["media"][role]["asset_id"] == asset).then_some(shown)
        },
    )
    .await
}

#[tokio::test]
async fn a_video_is_done_once_though_its_worker_is_killed_mid_transcode() {
    if !ffmpeg_present() {
        return;
    }
    let mut env = ADMIN.to_vec();
    env.push(("COMB_MEDIA_LEASE_MS", "2000"));
    let Some(comb) = Comb::system_with_env(&repo_topology(), &env) else {
        return;
    };
    let token = admin_token(&comb).await;
    let scratch = tempfile::tempdir().unwrap();
    let file = video_master(scratch.path(), 20);
    let product = first_product(&comb, "video").await;
    let accepted = upload(&comb, &token, &product, &file).await;
    let job_id = accepted["job"]["id"].as_str().unwrap().to_owned();
    let asset = accepted["asset_id"].as_str().unwrap().to_owned();
    eventually(
        "the worker transcoding",
        Duration::from_secs(60),
        || async {
            job(&comb, &token, &job_id)
                .await
                .filter(|job| job["state"] == "running" && job["percent"].as_u64() > Some(0))
        },
    )
    .await;
    let pid = comb.instance("media-worker-1")["pid"].as_u64().unwrap();
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    let done = settled(&comb, &token, &job_id, Duration::from_secs(300)).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "the killed attempt and the one that finished: {done}"
    );
    assert_ne!(
        comb.instance("media-worker-1")["pid"].as_u64().unwrap(),
        pid
    );
    // The catalog shows it (through the event transport), and its preview plays in parts.
    let shown = showing(&comb, &product, "preview", &asset).await;
    assert_eq!(shown["media"]["downloadable"], true);
    let part = comb
        .http
        .get(format!("{}/media/{asset}/preview.mp4", comb.gateway()))
        .header("range", "bytes=0-1023")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().len(), 1024);
    let page = comb
        .http
        .get(format!("{}/media", comb.dashboard()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&job_id) && page.contains("done"), "{page}");
}

#[tokio::test]
async fn music_and_video_previews_play_on_their_product_pages() {
    if !ffmpeg_present() {
        return;
    }
    let Some(comb) = Comb::system_with_env(&repo_topology(), &ADMIN) else {
        return;
    };
    let Some(browser) = crate::browser::browser("media").await else {
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
