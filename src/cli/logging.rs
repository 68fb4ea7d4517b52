//! Logs on stderr: text for people (the default), or one flat JSON object per line for
//! machines (`--log-format json`), each carrying the fields of the spans it happened in
//! (fleet, pass, workspace, launch id) beside its own (the AWS request id of a call).
//!
//! Under systemd, when stderr is the journal (`JOURNAL_STREAM` names it), a record is
//! one line however many its message has, without colour and without a timestamp (the
//! journal stamps each line), and begins with its syslog priority (`<4>` for a warning)
//! instead of its level's name, which the journal takes as the line's priority and strips.

use std::io::Write;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    // Lines for people.
    #[default]
    Text,
    // One JSON object per line, with the fields of its spans, for log collectors.
    Json,
}

/// Whether stderr takes plain text: text records, not to the journal.
static PLAIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether what a command says on stderr besides its log records may be plain text
/// (several lines, no record around it): not when records are JSON or go to the journal.
pub fn plain() -> bool {
    *PLAIN.get().unwrap_or(&true)
}

/// Says `text` on stderr: as it is where stderr takes plain text, else as one log record
/// (a warning when `warn`).
pub fn tell(warn: bool, text: &str) {
    if plain() {
        super::to_stderr(&format!("{text}\n"));
    } else if warn {
        tracing::warn!("{text}");
    } else {
        tracing::info!("{text}");
    }
}

/// Sets up logging for a command: prism's own warnings by default; what `watch` and
/// `serve` do at info; more with -v or RUST_LOG; the SDK's own messages from -v on.
pub fn init(verbose: u8, format: LogFormat, service: bool) {
    let default = match (verbose, service) {
        (0, false) => "prism=warn",
        (0, true) => "prism=info",
        (1, false) => "warn,prism=info",
        (1, true) => "warn,prism=debug",
        (2, _) => "info,prism=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let journal = stderr_is_journal();
    let _ = PLAIN.set(format == LogFormat::Text && !journal);
    let writer = Stderr { journal };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson { time: !journal })
                    .with_writer(writer),
            )
            .init(),
        // Text names no spans: a line says what happened in its own words.
        LogFormat::Text => {
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(!journal && super::report::stderr_color())
                .with_target(!service && !journal)
                .with_writer(writer);
            let events_only = tracing_subscriber::filter::filter_fn(|m| m.is_event());
            if journal {
                // The journal stamps each line, and the priority says its level.
                registry
                    .with(
                        layer
                            .without_time()
                            .with_level(false)
                            .with_filter(events_only),
                    )
                    .init();
            } else {
                registry.with(layer.with_filter(events_only)).init();
            }
        }
    }
}

/// Whether stderr is a stream to the journal: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, which a redirected stderr no longer matches.
pub fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|v| journal_matches(&v, stderr_id()))
}

/// The device and inode of stderr.
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether `JOURNAL_STREAM`'s `device:inode` is `id`.
fn journal_matches(value: &str, id: Option<(u64, u64)>) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    matches!((dev.parse::<u64>(), ino.parse::<u64>(), id), (Ok(d), Ok(i), Some(id)) if (d, i) == id)
}

/// The syslog priority of `level`, as `sd-daemon(3)` prefixes it.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A record as the journal takes it: the priority first, and the message's own line
/// breaks turned into ` ⏎ ` so that the record stays one entry.
pub fn journal_line(level: &Level, record: &str) -> String {
    let body = record.strip_suffix('\n').unwrap_or(record);
    format!("<{}>{}\n", priority(level), body.replace('\n', " ⏎ "))
}

/// Makes stderr writers; for the journal, one that writes [`journal_line`]s.
#[derive(Debug, Clone, Copy)]
struct Stderr {
    journal: bool,
}

/// Writes one record to stderr, whole.
struct RecordWriter {
    level: Option<Level>,
    buf: Vec<u8>,
}

impl Write for RecordWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let out = match &self.level {
            Some(level) => journal_line(level, &text),
            None => text.into_owned(),
        };
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = RecordWriter;

    fn make_writer(&'a self) -> RecordWriter {
        RecordWriter {
            level: self.journal.then_some(Level::INFO),
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> RecordWriter {
        RecordWriter {
            level: self.journal.then(|| *meta.level()),
            buf: Vec::new(),
        }
    }
}

/// One JSON object per record: `timestamp` (unless the journal stamps it), `level`,
/// `target`, `message`, then the fields of every span it is in (outermost first) and
/// its own, all at the top level.
struct FlatJson {
    time: bool,
}

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut map = serde_json::Map::new();
        if self.time {
            map.insert(
                "timestamp".into(),
                jiff::Timestamp::now().to_string().into(),
            );
        }
        map.insert("level".into(), meta.level().as_str().into());
        map.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(o)) =
                    serde_json::from_str::<serde_json::Value>(&fields.fields)
                {
                    map.extend(o);
                }
            }
        }
        event.record(&mut Fields(&mut map));
        writeln!(writer, "{}", serde_json::Value::Object(map))
    }
}

/// Puts an event's fields into a JSON object.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_record_is_one_line_with_its_priority() {
        assert_eq!(
            journal_line(&Level::WARN, "WARN first\nsecond\n"),
            "<4>WARN first ⏎ second\n"
        );
        assert_eq!(journal_line(&Level::INFO, "x\n"), "<6>x\n");
        assert_eq!(journal_line(&Level::DEBUG, "x"), "<7>x\n");
    }

    #[test]
    fn the_journal_is_the_stream_journal_stream_names() {
        assert!(journal_matches("8:1234", Some((8, 1234))));
        assert!(!journal_matches("8:1234", Some((8, 1235))));
        assert!(!journal_matches("8:1234", None));
        assert!(!journal_matches("garbage", Some((8, 1234))));
    }
}
