//! Log collection: every instance's output is appended to `logs/INSTANCE.log` under the
//! data directory and, unless quiet, shown on the terminal as readable lines prefixed by
//! the instance name.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::plan::Layout;

/// How many lines may wait to be written before instances' output is held back.
const BUFFERED_LINES: usize = 4096;

#[derive(Debug)]
struct InstanceLine {
    instance: String,
    text: String,
}

/// Where instances' log lines go.
#[derive(Debug, Clone)]
pub struct LogSink {
    lines: mpsc::Sender<InstanceLine>,
}

impl LogSink {
    /// Starts the writer; `console` also shows lines on stdout.
    pub fn start(layout: &Layout, console: bool) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let dir = layout.logs_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
        let (lines, mut received) = mpsc::channel::<InstanceLine>(BUFFERED_LINES);
        let layout = layout.clone();
        let color = console && std::io::stdout().is_terminal();
        let writer = tokio::spawn(async move {
            let mut files: HashMap<String, File> = HashMap::new();
            let mut colors: HashMap<String, usize> = HashMap::new();
            while let Some(line) = received.recv().await {
                if !files.contains_key(&line.instance) {
                    let path = layout.instance_log(&line.instance);
                    match OpenOptions::new().create(true).append(true).open(&path) {
                        Ok(file) => {
                            files.insert(line.instance.clone(), file);
                        }
                        Err(error) => eprintln!("comb | cannot write {}: {error}", path.display()),
                    }
                }
                if let Some(file) = files.get_mut(&line.instance) {
                    let _ = writeln!(file, "{}", line.text);
                }
                if console {
                    let next = colors.len();
                    let color_index = *colors.entry(line.instance.clone()).or_insert(next);
                    println!(
                        "{}",
                        prefixed(
                            &line.instance,
                            &render(&line.text),
                            color.then_some(color_index)
                        )
                    );
                }
            }
        });
        Ok((Self { lines }, writer))
    }

    /// A line an instance wrote.
    pub async fn instance(&self, instance: &str, text: String) {
        let _ = self
            .lines
            .send(InstanceLine {
                instance: instance.to_owned(),
                text,
            })
            .await;
    }

    /// Something the launcher itself has to say.
    pub fn launcher(&self, text: String) {
        println!("comb | {text}");
    }
}

const COLORS: &[&str] = &["36", "33", "35", "32", "34", "91", "96", "93"];
const PREFIX_WIDTH: usize = 14;

/// `instance | line`, the instance name padded (and coloured on a terminal).
pub fn prefixed(instance: &str, line: &str, color: Option<usize>) -> String {
    match color {
        Some(index) => format!(
            "\x1b[{}m{instance:<PREFIX_WIDTH$}|\x1b[0m {line}",
            COLORS[index % COLORS.len()]
        ),
        None => format!("{instance:<PREFIX_WIDTH$}| {line}"),
    }
}

/// A JSON log line as `HH:MM:SS LEVEL message key=value ...`; other lines as they are.
pub fn render(text: &str) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return text.to_owned();
    };
    let get = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or_default();
    let time = get("ts").get(11..19).unwrap_or_default();
    let mut line = format!("{time} {:<5} {}", get("level"), get("msg"));
    for (key, value) in &fields {
        if matches!(
            key.as_str(),
            "ts" | "level" | "msg" | "service" | "instance" | "target"
        ) {
            continue;
        }
        let value = match value {
            Value::String(text) if !text.contains(' ') => text.clone(),
            other => other.to_string(),
        };
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_render_readably() {
        let line = r#"{"ts":"2026-11-23T06:01:02.345Z","level":"INFO","service":"catalog","instance":"catalog-1","target":"comb_kit::server","msg":"listening","addr":"127.0.0.1:5000","n":3,"why":"two words"}"#;
        assert_eq!(
            render(line),
            r#"06:01:02 INFO  listening addr=127.0.0.1:5000 n=3 why="two words""#
        );
        assert_eq!(render("thread 'main' panicked"), "thread 'main' panicked");
        assert_eq!(prefixed("catalog-1", "x", None), "catalog-1     | x");
    }
}
