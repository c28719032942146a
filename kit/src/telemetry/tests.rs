use std::sync::Mutex;

use super::*;

/// A log sink tests can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;
    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn log_lines_are_json_with_service_trace_and_fields() {
    let sink = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(SpanLayer::new(Sampler::default(), None))
        .with(JsonLogLayer::new("catalog", "catalog-1", sink.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        tracing::info!(
            status = 404u64,
            took_ms = 1.5,
            path = "/say \"hi\"\n",
            ok = false,
            level = "shadowed",
            "not found"
        );
    });
    let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON object");
    assert_eq!(line["service"], "catalog");
    assert_eq!(line["instance"], "catalog-1");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["msg"], "not found");
    assert_eq!(line["status"], 404);
    assert_eq!(line["took_ms"], 1.5);
    assert_eq!(line["path"], "/say \"hi\"\n");
    assert_eq!(line["ok"], false);
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
    assert!(line["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
}
