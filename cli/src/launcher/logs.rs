//! Log collection: every instance's output is appended to `logs/INSTANCE.log` under the
//! data directory and, unless quiet, shown on the terminal as readable lines prefixed by
//! the instance name.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

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
            let mut files: HashMap<String, BufWriter<File>> = HashMap::new();
            let mut colors: HashMap<String, usize> = HashMap::new();
            while let Some(first) = received.recv().await {
                // Lines that arrived together are written together, then flushed, so a
                // busy system costs one write per file per batch rather than per line.
                let mut next = Some(first);
                while let Some(line) = next {
                    if !files.contains_key(&line.instance) {
                        let path = layout.instance_log(&line.instance);
                        match OpenOptions::new().create(true).append(true).open(&path) {
                            Ok(file) => {
                                files.insert(line.instance.clone(), BufWriter::new(file));
                            }
                            Err(error) => {
                                eprintln!("comb | cannot write {}: {error}", path.display());
                            }
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
                    next = received.try_recv().ok();
                }
                for file in files.values_mut() {
                    let _ = file.flush();
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
            "ts" | "level" | "msg" | "service" | "instance" | "target" | "span_id"
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

/// Which log lines to show besides their instance: at least a level, of one trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// `DEBUG`, `INFO`, `WARN` or `ERROR`: lines at this level or above.
    pub level: Option<String>,
    /// A trace id, or its first characters.
    pub trace: Option<String>,
}

/// One stored line, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub ts: String,
    pub instance: String,
    pub level: String,
    pub text: String,
}

fn severity(level: &str) -> u8 {
    match level {
        "TRACE" => 0,
        "DEBUG" => 1,
        "INFO" => 2,
        "WARN" => 3,
        _ => 4,
    }
}

impl LogFilter {
    /// Whether a stored line passes. A line that is not JSON (a panic message, say)
    /// counts as an error with no trace.
    pub fn matches(&self, line: &str) -> bool {
        let fields = serde_json::from_str::<Value>(line).ok();
        let field = |key: &str| {
            fields
                .as_ref()
                .and_then(|f| f.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let level = if fields.is_some() {
            field("level")
        } else {
            "ERROR"
        };
        let level_passes = self
            .level
            .as_deref()
            .is_none_or(|wanted| severity(level) >= severity(wanted));
        let trace_passes = self.trace.as_deref().is_none_or(|wanted| {
            let trace = field("trace_id");
            !trace.is_empty() && trace.starts_with(wanted)
        });
        level_passes && trace_passes
    }
}

/// The timestamp of a JSON log line.
pub fn timestamp(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    value.get("ts")?.as_str().map(str::to_owned)
}

/// The newest `limit` lines passing `filter` of every instance of `service` (or of every
/// instance), oldest first, instances interleaved by time.
pub fn read_logs(
    dir: &Path,
    service: Option<&str>,
    filter: &LogFilter,
    limit: usize,
) -> anyhow::Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    for (instance, path) in log_files(dir, service)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut last_ts = String::new();
        for line in text.lines() {
            if let Some(ts) = timestamp(line) {
                last_ts = ts;
            }
            if filter.matches(line) {
                let level = serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("level").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "ERROR".to_owned());
                lines.push(LogLine {
                    ts: last_ts.clone(),
                    instance: instance.clone(),
                    level,
                    text: line.to_owned(),
                });
            }
        }
    }
    // Stable: lines of one instance keep their order.
    lines.sort_by(|a, b| a.ts.cmp(&b.ts));
    let skip = lines.len().saturating_sub(limit);
    Ok(lines.split_off(skip))
}

/// The log files of instances matching `filter` (a service or an instance name).
pub fn log_files(dir: &Path, filter: Option<&str>) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(instance) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".log"))
        else {
            continue;
        };
        let matches = filter.is_none_or(|filter| {
            instance == filter
                || instance.rsplit_once('-').is_some_and(|(service, index)| {
                    service == filter && index.parse::<u32>().is_ok()
                })
        });
        if matches {
            files.push((instance.to_owned(), path));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_pick_lines_by_level_and_trace() {
        let info =
            r#"{"ts":"t","level":"INFO","msg":"a","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#;
        let warn = r#"{"ts":"t","level":"WARN","msg":"b"}"#;
        let panic = "thread 'main' panicked";
        let at_least_warn = LogFilter {
            level: Some("WARN".into()),
            trace: None,
        };
        assert!(!at_least_warn.matches(info));
        assert!(at_least_warn.matches(warn));
        assert!(
            at_least_warn.matches(panic),
            "unparsed lines count as errors"
        );
        let of_trace = LogFilter {
            level: None,
            trace: Some("4bf92f35".into()),
        };
        assert!(of_trace.matches(info));
        assert!(!of_trace.matches(warn));
        assert!(!of_trace.matches(panic));
        assert!(LogFilter::default().matches(panic));
    }

    #[test]
    fn read_logs_keeps_the_newest_matching_lines_in_time_order() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("catalog-1.log"),
            "{\"ts\":\"2026-01-01T00:00:01Z\",\"level\":\"INFO\",\"msg\":\"one\"}\n{\"ts\":\"2026-01-01T00:00:03Z\",\"level\":\"INFO\",\"msg\":\"three\"}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("orders-1.log"),
            "{\"ts\":\"2026-01-01T00:00:02Z\",\"level\":\"WARN\",\"msg\":\"two\"}\n",
        )
        .expect("write");
        let all = read_logs(dir.path(), None, &LogFilter::default(), 2).expect("read");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].instance, "orders-1");
        assert_eq!(all[0].level, "WARN");
        assert_eq!(all[1].instance, "catalog-1");
        assert!(all[1].text.contains("three"), "{all:?}");
        let catalog =
            read_logs(dir.path(), Some("catalog"), &LogFilter::default(), 10).expect("read");
        assert_eq!(catalog.len(), 2);
    }

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
