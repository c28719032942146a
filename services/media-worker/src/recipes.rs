//! What a worker makes of each kind of master, and how each file made is checked.
//!
//! - image: WebP and JPEG at 160, 320 and 640 pixels wide, aspect kept;
//! - audio: a 30-second preview as AAC in MP4 and as Opus in WebM, and the full length as
//!   a 256 kb/s MP3 download, all loudness-normalised (EBU R128, -16 LUFS);
//! - video: H.264/AAC MP4 at 360p and 720p (only those not above the master's height) as
//!   downloads, a 30-second preview as MP4 and as an HLS ladder with a master playlist,
//!   and a poster frame.

use crate::ffmpeg::Probe;

/// Widths of the image renditions.
pub const IMAGE_WIDTHS: [u32; 3] = [160, 320, 640];
/// Heights of the video renditions, when the master is at least as tall.
pub const VIDEO_HEIGHTS: [u32; 2] = [360, 720];
/// The length of previews.
pub const PREVIEW_SECONDS: f64 = 30.0;
/// The bitrate of full-length audio downloads.
pub const DOWNLOAD_AUDIO_BITRATE: &str = "256k";
const LOUDNORM: &str = "loudnorm=I=-16:TP=-1.5:LRA=11";

/// One ffmpeg run and the share of the job's work it is.
#[derive(Debug, Clone)]
pub struct Step {
    pub args: Vec<String>,
    /// Seconds of media it writes, for its progress.
    pub seconds: f64,
}

/// A file a job makes, and what it must turn out to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub content_type: &'static str,
    pub public: bool,
    pub expect: Expect,
}

/// What ffprobe must find in an output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expect {
    /// A word of the container's format name (`mp4`, `webm`, `mp3`, `hls`, `webp_pipe`).
    pub container: &'static str,
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    /// Within half a second.
    pub seconds: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Every file of a job: the runs that make them and the outputs to check and keep.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub outputs: Vec<Output>,
    /// Files written by the runs that are kept without a check of their own (HLS segments,
    /// checked through their playlist).
    pub segments_of: Vec<String>,
    /// Text files the worker writes itself (the HLS master playlist): name and contents.
    pub written: Vec<(String, String)>,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// The plan for an image master of `probe`.
pub fn image(master: &str, probe: &Probe) -> Result<Plan, String> {
    let source = probe.video().ok_or("the image has no picture")?;
    let (Some(width), Some(height)) = (source.width, source.height) else {
        return Err("the image has no dimensions".into());
    };
    if width == 0 || height == 0 {
        return Err("the image has no dimensions".into());
    }
    let mut args = strings(&["-i", master]);
    let mut outputs = Vec::new();
    for target in IMAGE_WIDTHS {
        let target_height = even(f64::from(target) * f64::from(height) / f64::from(width));
        for (extension, content_type, codec, quality) in [
            ("webp", "image/webp", "webp", ["-quality", "80"]),
            ("jpg", "image/jpeg", "mjpeg", ["-q:v", "3"]),
        ] {
            let name = format!("w{target}.{extension}");
            args.extend(strings(&["-map", "0:v:0", "-frames:v", "1", "-vf"]));
            args.push(format!(
                "scale={target}:{target_height}:flags=lanczos,format=yuv420p"
            ));
            args.extend(strings(&quality));
            args.push(name.clone());
            outputs.push(Output {
                name,
                content_type,
                public: true,
                expect: Expect {
                    container: if extension == "webp" {
                        "webp"
                    } else {
                        "image2"
                    },
                    video_codec: Some(codec),
                    width: Some(target),
                    height: Some(target_height),
                    ..Expect::default()
                },
            });
        }
    }
    Ok(Plan {
        steps: vec![Step { args, seconds: 1.0 }],
        outputs,
        ..Plan::default()
    })
}

/// The plan for an audio master of `probe`.
pub fn audio(master: &str, probe: &Probe) -> Result<Plan, String> {
    probe.audio().ok_or("the file has no sound")?;
    let seconds = probe
        .seconds()
        .filter(|seconds| *seconds > 0.0)
        .ok_or("the sound has no duration")?;
    let preview = seconds.min(PREVIEW_SECONDS);
    let preview_text = format!("{preview:.3}");
    let audio_out = |extra: &[&str], name: &str| {
        let mut args = strings(&[
            "-i", master, "-map", "0:a:0", "-vn", "-af", LOUDNORM, "-ar", "48000",
        ]);
        args.extend(strings(extra));
        args.push(name.to_owned());
        args
    };
    let mut preview_m4a = strings(&["-t", &preview_text]);
    preview_m4a.extend(audio_out(
        &["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"],
        "preview.m4a",
    ));
    let mut preview_webm = strings(&["-t", &preview_text]);
    preview_webm.extend(audio_out(
        &["-c:a", "libopus", "-b:a", "96k"],
        "preview.webm",
    ));
    let download = audio_out(
        &["-c:a", "libmp3lame", "-b:a", DOWNLOAD_AUDIO_BITRATE],
        "download.mp3",
    );
    let sound = |container, codec, seconds, name: &str, content_type, public| Output {
        name: name.to_owned(),
        content_type,
        public,
        expect: Expect {
            container,
            audio_codec: Some(codec),
            seconds: Some(seconds),
            ..Expect::default()
        },
    };
    Ok(Plan {
        steps: vec![
            Step {
                args: preview_m4a,
                seconds: preview,
            },
            Step {
                args: preview_webm,
                seconds: preview,
            },
            Step {
                args: download,
                seconds,
            },
        ],
        outputs: vec![
            sound("mp4", "aac", preview, "preview.m4a", "audio/mp4", true),
            sound("webm", "opus", preview, "preview.webm", "audio/webm", true),
            sound("mp3", "mp3", seconds, "download.mp3", "audio/mpeg", false),
        ],
        ..Plan::default()
    })
}

/// The plan for a video master of `probe`.
pub fn video(master: &str, probe: &Probe) -> Result<Plan, String> {
    let picture = probe.video().ok_or("the file has no picture")?;
    let (Some(width), Some(height)) = (picture.width, picture.height) else {
        return Err("the video has no dimensions".into());
    };
    if width == 0 || height < 2 {
        return Err("the video has no dimensions".into());
    }
    let seconds = probe
        .seconds()
        .filter(|seconds| *seconds > 0.0)
        .ok_or("the video has no duration")?;
    let has_sound = probe.audio().is_some();
    let preview = seconds.min(PREVIEW_SECONDS);
    let mut heights: Vec<u32> = VIDEO_HEIGHTS
        .into_iter()
        .filter(|target| *target <= height)
        .collect();
    if heights.is_empty() {
        heights.push(height - height % 2);
    }
    let width_at = |target: u32| even(f64::from(target) * f64::from(width) / f64::from(height));
    let encode = |target: u32| {
        let mut args = strings(&["-map", "0:v:0"]);
        if has_sound {
            args.extend(strings(&[
                "-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
            ]));
        }
        args.extend(strings(&["-vf"]));
        args.push(format!(
            "scale={}:{target},format=yuv420p",
            width_at(target)
        ));
        args.extend(strings(&[
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-g",
            "48",
            "-keyint_min",
            "48",
            "-sc_threshold",
            "0",
        ]));
        args
    };
    let mut steps = Vec::new();
    let mut outputs = Vec::new();
    let mut segments_of = Vec::new();
    let movie = |target: u32, name: String, seconds: f64, public: bool| Output {
        name,
        content_type: "video/mp4",
        public,
        expect: Expect {
            container: "mp4",
            video_codec: Some("h264"),
            audio_codec: has_sound.then_some("aac"),
            seconds: Some(seconds),
            width: Some(width_at(target)),
            height: Some(target),
        },
    };
    for &target in &heights {
        let name = format!("{target}p.mp4");
        let mut args = strings(&["-i", master]);
        args.extend(encode(target));
        args.extend(strings(&["-movflags", "+faststart", &name]));
        steps.push(Step { args, seconds });
        outputs.push(movie(target, name, seconds, false));
    }
    let preview_text = format!("{preview:.3}");
    let smallest = heights[0];
    let mut args = strings(&["-t", &preview_text, "-i", master]);
    args.extend(encode(smallest));
    args.extend(strings(&["-movflags", "+faststart", "preview.mp4"]));
    steps.push(Step {
        args,
        seconds: preview,
    });
    outputs.push(movie(smallest, "preview.mp4".into(), preview, true));
    let mut master_playlist = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    for &target in &heights {
        let playlist = format!("hls-{target}p.m3u8");
        let mut args = strings(&["-t", &preview_text, "-i", master]);
        args.extend(encode(target));
        args.extend(strings(&[
            "-f",
            "hls",
            "-hls_time",
            "4",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
        ]));
        args.push(format!("hls-{target}p-%05d.ts"));
        args.push(playlist.clone());
        steps.push(Step {
            args,
            seconds: preview,
        });
        let bandwidth = if target >= 720 { 2_800_000 } else { 900_000 };
        master_playlist.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={}x{target},CODECS=\"avc1.64001f{}\"\n{playlist}\n",
            width_at(target),
            if has_sound { ",mp4a.40.2" } else { "" }
        ));
        segments_of.push(format!("hls-{target}p-"));
        let mut expect = movie(target, playlist.clone(), preview, true).expect;
        expect.container = "hls";
        outputs.push(Output {
            name: playlist,
            content_type: "application/vnd.apple.mpegurl",
            public: true,
            expect,
        });
    }
    let poster_at = format!("{:.3}", (seconds / 2.0).min(1.0));
    let top = *heights.last().unwrap_or(&smallest);
    let mut args = strings(&[
        "-ss",
        &poster_at,
        "-i",
        master,
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-vf",
    ]);
    args.push(format!("scale={}:{top}", width_at(top)));
    args.extend(strings(&["-q:v", "3", "poster.jpg"]));
    steps.push(Step { args, seconds: 0.1 });
    outputs.push(Output {
        name: "poster.jpg".into(),
        content_type: "image/jpeg",
        public: true,
        expect: Expect {
            container: "image2",
            video_codec: Some("mjpeg"),
            width: Some(width_at(top)),
            height: Some(top),
            ..Expect::default()
        },
    });
    Ok(Plan {
        steps,
        outputs,
        segments_of,
        written: vec![("hls.m3u8".into(), master_playlist)],
    })
}

/// The nearest even number (video encoders want even dimensions).
fn even(value: f64) -> u32 {
    let rounded = value.round() as u32;
    (rounded + rounded % 2).max(2)
}

/// Whether `probe` is what `expect` says; the reason when it is not.
pub fn check(name: &str, expect: &Expect, probe: &Probe) -> Result<(), String> {
    let mismatch = |what: String| Err(format!("the check of {name} failed: {what}"));
    if !probe
        .format
        .format_name
        .split(',')
        .any(|word| word.contains(expect.container))
    {
        return mismatch(format!(
            "container {} is not {}",
            probe.format.format_name, expect.container
        ));
    }
    if let Some(codec) = expect.video_codec {
        let found = probe.video().map(|stream| stream.codec_name.as_str());
        if found != Some(codec) {
            return mismatch(format!("video codec {found:?} is not {codec}"));
        }
        let picture = probe.video();
        if let Some(width) = expect.width
            && picture.and_then(|stream| stream.width) != Some(width)
        {
            return mismatch(format!(
                "width {:?} is not {width}",
                picture.and_then(|stream| stream.width)
            ));
        }
        if let Some(height) = expect.height
            && picture.and_then(|stream| stream.height) != Some(height)
        {
            return mismatch(format!(
                "height {:?} is not {height}",
                picture.and_then(|stream| stream.height)
            ));
        }
    }
    if let Some(codec) = expect.audio_codec {
        let found = probe.audio().map(|stream| stream.codec_name.as_str());
        if found != Some(codec) {
            return mismatch(format!("audio codec {found:?} is not {codec}"));
        }
    }
    if let Some(seconds) = expect.seconds {
        match probe.seconds() {
            Some(found) if (found - seconds).abs() <= 0.5 => {}
            found => {
                return mismatch(format!(
                    "duration {found:?} s is not within 0.5 s of {seconds:.2} s"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffmpeg::{Format, Stream};

    fn picture(width: u32, height: u32, seconds: Option<&str>) -> Probe {
        Probe {
            format: Format {
                format_name: "mov,mp4,m4a,3gp,3g2,mj2".into(),
                duration: seconds.map(str::to_owned),
            },
            streams: vec![Stream {
                codec_type: "video".into(),
                codec_name: "h264".into(),
                width: Some(width),
                height: Some(height),
                duration: None,
            }],
        }
    }

    #[test]
    fn images_keep_their_aspect_at_three_widths() {
        let plan = image("master", &picture(1000, 1500, None)).expect("plan");
        let sizes: Vec<_> = plan
            .outputs
            .iter()
            .map(|output| (output.name.as_str(), output.expect.height))
            .collect();
        assert_eq!(sizes[0], ("w160.webp", Some(240)));
        assert_eq!(sizes[5], ("w640.jpg", Some(960)));
        assert_eq!(plan.outputs.len(), 6);
    }

    #[test]
    fn video_is_never_upscaled() {
        let small = video("master", &picture(640, 360, Some("12.0"))).expect("plan");
        let names: Vec<_> = small
            .outputs
            .iter()
            .map(|output| output.name.as_str())
            .collect();
        assert!(
            names.contains(&"360p.mp4") && !names.contains(&"720p.mp4"),
            "{names:?}"
        );
        let tiny = video("master", &picture(320, 240, Some("12.0"))).expect("plan");
        assert!(tiny.outputs.iter().any(|output| output.name == "240p.mp4"));
        let large = video("master", &picture(1920, 1080, Some("95.0"))).expect("plan");
        let preview = large
            .outputs
            .iter()
            .find(|output| output.name == "preview.mp4")
            .expect("preview");
        assert_eq!(preview.expect.seconds, Some(PREVIEW_SECONDS));
        assert!(large.written[0].1.contains("hls-720p.m3u8"));
        assert!(
            !large
                .outputs
                .iter()
                .find(|output| output.name == "720p.mp4")
                .expect("720p")
                .public
        );
    }

    #[test]
    fn checks_say_what_differs() {
        let expect = Expect {
            container: "mp4",
            video_codec: Some("h264"),
            seconds: Some(10.0),
            width: Some(640),
            height: Some(360),
            ..Expect::default()
        };
        assert!(check("a.mp4", &expect, &picture(640, 360, Some("10.3"))).is_ok());
        let wrong =
            check("a.mp4", &expect, &picture(640, 360, Some("11.0"))).expect_err("too long");
        assert!(wrong.contains("duration"), "{wrong}");
        let wrong =
            check("a.mp4", &expect, &picture(600, 360, Some("10.0"))).expect_err("too narrow");
        assert!(wrong.contains("width"), "{wrong}");
    }
}
