//! Logging: `-v` levels in kube-proxy's spirit, text or JSON, to stderr.
//!
//! | `-v`  | what is logged                                              |
//! |-------|-------------------------------------------------------------|
//! | 0, 1  | info and above, without the per-sync lines                  |
//! | 2, 3  | info and above, each sync included                          |
//! | 4, 5  | debug from kproxy (each kernel operation), info from libraries |
//! | 6+    | trace from kproxy, debug from libraries (HTTP, watch protocol) |
//!
//! `RUST_LOG`, when set, replaces these directives entirely.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use crate::config::LogFormat;

/// The filter directives for a `-v` level.
pub fn directives(verbosity: u8) -> String {
    match verbosity {
        // kube-proxy at its default level does not log every sync; the
        // sync loop logs them at info, so hold its target to warnings.
        0 | 1 => "info,kproxy::sync=warn".into(),
        2 | 3 => "info".into(),
        4 | 5 => "info,kproxy=debug".into(),
        _ => "debug,kproxy=trace".into(),
    }
}

/// Install the global subscriber. A second call keeps the first one.
pub fn init(verbosity: u8, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(directives(verbosity)));
    // Colour only on a terminal: container runtimes store stderr verbatim.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ =
        tracing::subscriber::set_global_default(subscriber(filter, format, ansi, std::io::stderr));
}

fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    // Fields at the top level, next to "message", as
                    // log collectors expect.
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    /// Emit a fixed set of events through the real subscriber; return the
    /// messages that got through.
    fn capture(verbosity: u8, format: LogFormat) -> String {
        let buf = Buffer::default();
        let sub = subscriber(
            EnvFilter::new(directives(verbosity)),
            format,
            false,
            buf.clone(),
        );
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "kproxy::source::kube", kind = "Service", "listed");
            tracing::info!(target: "kproxy::sync", "sync done");
            tracing::warn!(target: "kproxy::sync", "source disconnected");
            tracing::debug!(target: "kproxy::kernel", "add virtual server");
            tracing::trace!(target: "kproxy::kernel", "netlink bytes");
            tracing::debug!(target: "hyper_util", "connecting");
            tracing::trace!(target: "hyper_util", "polling");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    fn messages(out: &str) -> Vec<String> {
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["message"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn verbosity_levels() {
        let at = |v| messages(&capture(v, LogFormat::Json));
        assert_eq!(at(0), ["listed", "source disconnected"]);
        assert_eq!(at(1), at(0));
        assert_eq!(at(2), ["listed", "sync done", "source disconnected"]);
        assert_eq!(
            at(4),
            [
                "listed",
                "sync done",
                "source disconnected",
                "add virtual server"
            ]
        );
        assert_eq!(
            at(6),
            [
                "listed",
                "sync done",
                "source disconnected",
                "add virtual server",
                "netlink bytes",
                "connecting"
            ]
        );
    }

    /// JSON lines carry the level, the message and the fields at the top.
    #[test]
    fn json_format() {
        let out = capture(0, LogFormat::Json);
        let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "listed");
        assert_eq!(first["kind"], "Service");
        assert_eq!(first["target"], "kproxy::source::kube");
    }

    #[test]
    fn text_format() {
        let out = capture(0, LogFormat::Text);
        let first = out.lines().next().unwrap();
        assert!(first.contains("INFO"), "{first}");
        assert!(first.contains("listed"), "{first}");
        assert!(first.contains("kind=\"Service\""), "{first}");
        assert!(serde_json::from_str::<serde_json::Value>(first).is_err());
    }
}
