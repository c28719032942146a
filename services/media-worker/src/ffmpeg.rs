//! Running Debian's `ffmpeg` and `ffprobe` as child processes: ffmpeg at a lower CPU
//! priority with its `-progress` output read into a fraction done, ffprobe to describe a
//! file (container, streams, duration, size).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Why a tool run failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} could not be started ({source}); install it (Debian: apt-get install ffmpeg)")]
    Missing {
        tool: String,
        source: std::io::Error,
    },
    /// The tool ran and refused the input: no retry would help.
    #[error("{0}")]
    Undecodable(String),
    /// The tool failed for another reason (killed, out of disk): worth another attempt.
    #[error("{0}")]
    Failed(String),
    #[error("stopped: the job's lease is lost")]
    Stopped,
}

/// The tools and how they run.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: String,
    pub ffprobe: String,
    /// Added to ffmpeg's niceness (0: run at the worker's own priority).
    pub niceness: u8,
    /// Run ffmpeg in the idle scheduling class (`chrt --idle`, where util-linux has it):
    /// it gets a core only when no other process wants one, so a request never waits
    /// behind a transcode.
    pub idle_class: bool,
    /// ffmpeg threads per run (0: ffmpeg decides).
    pub threads: u16,
}

/// What ffprobe says of a file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Probe {
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub streams: Vec<Stream>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Format {
    #[serde(default)]
    pub format_name: String,
    #[serde(default)]
    pub duration: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub codec_type: String,
    #[serde(default)]
    pub codec_name: String,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub duration: Option<String>,
}

impl Probe {
    /// Seconds, from the container (or its longest stream).
    pub fn seconds(&self) -> Option<f64> {
        let container = self
            .format
            .duration
            .as_deref()
            .and_then(|text| text.parse::<f64>().ok());
        container.or_else(|| {
            self.streams
                .iter()
                .filter_map(|stream| stream.duration.as_deref()?.parse::<f64>().ok())
                .reduce(f64::max)
        })
    }

    pub fn video(&self) -> Option<&Stream> {
        self.streams
            .iter()
            .find(|stream| stream.codec_type == "video")
    }

    pub fn audio(&self) -> Option<&Stream> {
        self.streams
            .iter()
            .find(|stream| stream.codec_type == "audio")
    }

    /// One line for operators: container, streams, duration.
    pub fn summary(&self) -> String {
        let streams: Vec<String> = self
            .streams
            .iter()
            .map(|stream| match (stream.width, stream.height) {
                (Some(width), Some(height)) => format!("{} {width}x{height}", stream.codec_name),
                _ => stream.codec_name.clone(),
            })
            .collect();
        match self.seconds() {
            Some(seconds) => format!(
                "{} [{}] {seconds:.2} s",
                self.format.format_name,
                streams.join(", ")
            ),
            None => format!("{} [{}]", self.format.format_name, streams.join(", ")),
        }
    }
}

impl Tools {
    /// A command running `tool` at the workers' lower priority: the idle class and the
    /// niceness, as set.
    fn lowered(&self, tool: &str) -> Command {
        if self.idle_class {
            let mut command = Command::new("chrt");
            command.args([
                "--idle",
                "0",
                "nice",
                "-n",
                &self.niceness.to_string(),
                tool,
            ]);
            command
        } else if self.niceness > 0 {
            let mut command = Command::new("nice");
            command.args(["-n", &self.niceness.to_string(), tool]);
            command
        } else {
            Command::new(tool)
        }
    }

    /// Whether ffmpeg and ffprobe can be run; without `chrt`, ffmpeg runs at its
    /// niceness alone.
    pub async fn check(&mut self) -> Result<(), ToolError> {
        if self.idle_class
            && Command::new("chrt")
                .args(["--idle", "0", "true"])
                .status()
                .await
                .map_or(true, |status| !status.success())
        {
            tracing::warn!(
                "chrt cannot put ffmpeg in the idle class here; it runs at its niceness alone"
            );
            self.idle_class = false;
        }
        for tool in [&self.ffmpeg, &self.ffprobe] {
            let ran = Command::new(tool)
                .arg("-version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .map_err(|source| ToolError::Missing {
                    tool: tool.clone(),
                    source,
                })?;
            if !ran.success() {
                return Err(ToolError::Failed(format!("{tool} -version failed")));
            }
        }
        Ok(())
    }

    /// Describes `file`; an input ffprobe cannot read is undecodable.
    pub async fn probe(&self, file: &Path) -> Result<Probe, ToolError> {
        let output = self
            .lowered(&self.ffprobe)
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
            ])
            .arg(file)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| ToolError::Missing {
                tool: self.ffprobe.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(ToolError::Undecodable(format!(
                "the file cannot be decoded: {}",
                last_line(&output.stderr)
            )));
        }
        let probe: Probe = serde_json::from_slice(&output.stdout).map_err(|error| {
            ToolError::Failed(format!("ffprobe's answer could not be read: {error}"))
        })?;
        if probe.streams.is_empty() {
            return Err(ToolError::Undecodable(
                "the file cannot be decoded: it has no streams".into(),
            ));
        }
        Ok(probe)
    }

    /// Runs ffmpeg with `args` in `directory`, at the lower priority, storing the share of
    /// `expected_seconds` done (per mille) in `progress`; stops when `stop` says so.
    pub async fn ffmpeg(
        &self,
        directory: &Path,
        args: &[String],
        expected_seconds: f64,
        progress: &Arc<AtomicU32>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ToolError> {
        let mut command = self.lowered(&self.ffmpeg);
        command
            .current_dir(directory)
            .args([
                "-hide_banner",
                "-nostdin",
                "-nostats",
                "-loglevel",
                "error",
                "-y",
            ])
            .args(["-progress", "pipe:1"]);
        // `-threads` bounds the encoder only where it precedes the output (the last
        // argument); before an input it would bound the decoder alone.
        let threads = self.threads.to_string();
        let (output, options) = args
            .split_last()
            .map_or((None, args), |(last, rest)| (Some(last), rest));
        command.args(options);
        if self.threads > 0 {
            command.args(["-filter_threads", &threads, "-threads", &threads]);
        }
        let mut child = command
            .args(output)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ToolError::Missing {
                tool: self.ffmpeg.clone(),
                source,
            })?;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let expected_us = (expected_seconds * 1_000_000.0).max(1.0);
        let progress = Arc::clone(progress);
        let reading = async move {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(done) = line
                    .strip_prefix("out_time_us=")
                    .and_then(|us| us.parse::<f64>().ok())
                {
                    let per_mille = (done / expected_us * 1000.0).clamp(0.0, 1000.0) as u32;
                    progress.store(per_mille, Ordering::Relaxed);
                }
            }
        };
        let errors = async move {
            let mut text = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_end(&mut text).await;
            }
            text
        };
        let mut stop = stop.clone();
        let run = async {
            let (status, (), errors) = tokio::join!(child.wait(), reading, errors);
            (status, errors)
        };
        let (status, errors) = tokio::select! {
            finished = run => finished,
            _ = stop.wait_for(|stop| *stop) => return Err(ToolError::Stopped),
        };
        let status = status.map_err(|error| {
            ToolError::Failed(format!("ffmpeg could not be waited for: {error}"))
        })?;
        if status.success() {
            return Ok(());
        }
        let message = last_line(&errors);
        if message.contains("Invalid data found")
            || message.contains("could not find codec")
            || message.contains("does not contain any stream")
        {
            Err(ToolError::Undecodable(format!(
                "the file cannot be decoded: {message}"
            )))
        } else {
            Err(ToolError::Failed(format!(
                "ffmpeg failed ({status}): {message}"
            )))
        }
    }
}

/// The last non-empty line of a tool's error output.
fn last_line(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .chars()
        .take(400)
        .collect()
}

/// A scratch directory for one job, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub async fn create(root: &Path, name: &str) -> std::io::Result<Self> {
        let path = root.join(name);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&path).await?;
        }
        tokio::fs::create_dir_all(&path).await?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(%error, path = %self.0.display(), "a job's scratch directory was not removed");
        }
    }
}
