//! Logging: human lines (the default) or one JSON object per line
//! (`--log-format json`: time, level, message, and the event's fields, among
//! them `resource`, `action` and `duration_ms` on a resource's lines), both
//! on a stderr that can never stop the agent.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tracing::field::{Field, Visit};

use crate::args::LogFormat;
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Fields a resource's log lines carry for `--log-format json`; the human
/// lines say the same in their message, so they leave these out.
const STRUCTURED: [&str; 3] = ["resource", "action", "duration_ms"];

/// Set by [`init`]: `report!` writes JSON too.
static JSON: AtomicBool = AtomicBool::new(false);

/// Set by [`init`]: the human lines are coloured (stderr is a terminal).
static ANSI: AtomicBool = AtomicBool::new(false);

/// When the human lines' clock started (their stamps are the time since).
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// The human lines' stamp: seconds since [`init`], as tracing's `uptime`
/// timer writes it.
fn write_uptime(w: &mut impl std::fmt::Write) -> std::fmt::Result {
    let e = EPOCH.get_or_init(std::time::Instant::now).elapsed();
    write!(w, "{:4}.{:09}s", e.as_secs(), e.subsec_nanos())
}

struct Uptime;

impl tracing_subscriber::fmt::time::FormatTime for Uptime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write_uptime(w)
    }
}

pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    match format {
        LogFormat::Human => {
            EPOCH.get_or_init(std::time::Instant::now);
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            ANSI.store(ansi, Relaxed);
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(false)
                .with_timer(Uptime)
                .with_ansi(ansi)
                .fmt_fields(HumanFields)
                .with_writer(|| LogWriter)
                // Its own report of a failed write goes to stderr with
                // eprintln!, which panics when stderr is the pipe that just
                // closed.
                .log_internal_errors(false)
                .init();
        }
        LogFormat::Json => {
            JSON.store(true, Relaxed);
            tracing_subscriber::registry()
                .with(JsonLines.with_filter(filter))
                .init();
        }
    }
}

/// The message, then `name=value` for the other fields but [`STRUCTURED`].
struct HumanFields;

impl<'writer> FormatFields<'writer> for HumanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = HumanVisitor { out: String::new() };
        fields.record(&mut v);
        writer.write_str(&v.out)
    }
}

struct HumanVisitor {
    out: String,
}

impl Visit for HumanVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if STRUCTURED.contains(&name) {
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        let _ = if name == "message" {
            write!(self.out, "{value:?}")
        } else {
            write!(self.out, "{name}={value:?}")
        };
    }
}

/// Every field of an event as JSON values.
struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

struct JsonLines;

impl<S: tracing::Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = JsonVisitor(serde_json::Map::new());
        event.record(&mut fields);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write_json(&level, fields.0);
    }
}

/// Writes one JSON line: time and level first, then the fields.
fn write_json(level: &str, fields: serde_json::Map<String, serde_json::Value>) {
    let mut line = serde_json::Map::new();
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    line.insert("time".into(), time.into());
    line.insert("level".into(), level.into());
    line.extend(fields);
    let mut text = serde_json::Value::Object(line).to_string();
    text.push('\n');
    use std::io::Write as _;
    let _ = LogWriter.write_all(text.as_bytes());
}

/// An error for the user (a diagnostic, a bad flag), as a line of its own or,
/// with `--log-format json`, as a JSON object whose message is the text.
pub fn report(text: &str) {
    if JSON.load(Relaxed) {
        let mut fields = serde_json::Map::new();
        fields.insert("message".into(), text.into());
        write_json("error", fields);
    } else {
        use std::io::Write as _;
        let _ = writeln!(LogWriter, "{text}");
    }
}

/// Logs each of `lines` at INFO, as `info!` in the crate's root would, in
/// a few writes and without an event per line: a compile's notes are
/// thousands of lines, and tracing's dispatch and formatting of each took
/// a one-shot run of 1 000 files 0.6-1 ms (5%) before its first check. The
/// lines are tracing's own human lines (its stamp, then its ` INFO`, then
/// the text); coloured or JSON lines go through tracing.
pub fn info_lines<T: std::fmt::Display>(lines: impl IntoIterator<Item = T>) {
    if !tracing::enabled!(target: "mgmt", tracing::Level::INFO) {
        return;
    }
    if JSON.load(Relaxed) || ANSI.load(Relaxed) {
        for line in lines {
            tracing::info!(target: "mgmt", "{line}");
        }
        return;
    }
    use std::io::Write as _;
    let mut text = String::new();
    for line in lines {
        let _ = write_uptime(&mut text);
        let _ = writeln!(text, "  INFO {line}");
        if text.len() >= BATCH_BYTES {
            let _ = LogWriter.write_all(text.as_bytes());
            text.clear();
        }
    }
    let _ = LogWriter.write_all(text.as_bytes());
}

/// Set once stderr refused a write: logging is off from then on.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// stderr that never fails: a closed or broken pipe, a full disk or a
/// vanished terminal turns logging off instead of stopping the agent, which
/// goes on and exits with the status it would have had.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if STDERR_GONE.load(Relaxed) {
            return Ok(buf.len());
        }
        if BATCHING.load(Relaxed) {
            let mut batch = BATCH
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if BATCHING.load(Relaxed) {
                batch.extend_from_slice(buf);
                if batch.len() >= BATCH_BYTES {
                    write_stderr(&batch);
                    batch.clear();
                }
                return Ok(buf.len());
            }
        }
        write_stderr(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes to stderr. A line that cannot be written now (a full disk, a
/// non-blocking pipe that is full) is dropped; a stderr that is gone for good
/// (a closed pipe, a closed descriptor) turns logging off.
fn write_stderr(buf: &[u8]) {
    use std::io::Write as _;
    if let Err(e) = std::io::stderr().write_all(buf)
        && (e.kind() == std::io::ErrorKind::BrokenPipe
            || e.raw_os_error() == Some(nix::libc::EBADF))
    {
        STDERR_GONE.store(true, Relaxed);
    }
}

/// Set while [`batched`] runs: every thread's lines go to [`BATCH`], in the
/// order they were logged, instead of one `write` each.
static BATCHING: AtomicBool = AtomicBool::new(false);
static BATCH: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
/// A batch is written out at this size, so a long burst is not held back.
const BATCH_BYTES: usize = 64 * 1024;

/// Runs `burst` with the lines it logs (and any other thread's meanwhile)
/// written to stderr in a few large writes, all by the time it returns. For
/// bursts of thousands of lines logged at once, such as a compile's notes:
/// one `write` per line costs a one-shot run about as much as checking its
/// files.
pub fn batched<R>(burst: impl FnOnce() -> R) -> R {
    if BATCHING.load(Relaxed) {
        return burst();
    }
    /// Writes the batch out even if `burst` panics.
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            let mut batch = BATCH
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            BATCHING.store(false, Relaxed);
            if !STDERR_GONE.load(Relaxed) {
                write_stderr(&batch);
            }
            *batch = Vec::new();
        }
    }
    BATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .reserve(BATCH_BYTES);
    BATCHING.store(true, Relaxed);
    let _flush = Flush;
    burst()
}
