//! Progress a person can watch: on a terminal, an indicatif bar per account and one for the
//! whole run (messages, bytes, rate, ETA); otherwise (a Kubernetes Job's log) a plain line per
//! account every few seconds and when it finishes, so `kubectl logs -f` shows the same.

use std::{
    io::IsTerminal,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How often a plain progress line is printed per account.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The whole run's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    verb: &'static str,
}

impl Progress {
    /// Bars when standard error is a terminal, lines otherwise. `verb` names the work
    /// ("import", "export").
    pub fn new(verb: &'static str, accounts: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bars: None, verb };
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} messages ({rate}, eta {eta})")
                .map(with_rate)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.set_prefix(format!("{accounts} account(s)"));
        Self { bars: Some((multi, overall)), verb }
    }

    /// The progress of one account.
    pub fn account(&self, address: &str) -> AccountProgress {
        let bar = self.bars.as_ref().map(|(multi, _)| {
            let bar = multi.insert_from_back(1, ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} messages, {msg} ({rate}, eta {eta})")
                    .map(with_rate)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(address.to_string());
            bar
        });
        AccountProgress {
            inner: Arc::new(Inner {
                address: address.to_string(),
                verb: self.verb,
                bar,
                overall: self.bars.as_ref().map(|(_, o)| o.clone()),
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                total_bytes: AtomicU64::new(0),
                started: Mutex::new(Instant::now()),
                last_line: Mutex::new(Instant::now()),
                phase: Mutex::new(String::new()),
            }),
        }
    }

    pub fn finish(&self) {
        if let Some((_, overall)) = &self.bars {
            overall.finish();
        }
    }
}

/// A `{rate}` key: whole messages per second (indicatif's `{per_sec}` shows four decimals).
fn with_rate(style: ProgressStyle) -> ProgressStyle {
    style.with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.0} msg/s", state.per_sec());
    })
}

#[derive(Debug)]
struct Inner {
    address: String,
    verb: &'static str,
    bar: Option<ProgressBar>,
    overall: Option<ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    bytes: AtomicU64,
    total_bytes: AtomicU64,
    started: Mutex<Instant>,
    last_line: Mutex<Instant>,
    phase: Mutex<String>,
}

/// One account's progress; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccountProgress {
    inner: Arc<Inner>,
}

impl AccountProgress {
    /// What the account is doing now (listing, comparing a folder, copying a folder).
    pub fn phase(&self, phase: &str) {
        let i = &self.inner;
        if let Ok(mut p) = i.phase.lock() {
            *p = phase.to_string();
        }
        match &i.bar {
            Some(bar) => bar.set_message(format!("{} - {phase}", crate::admin::human(i.bytes.load(Ordering::Relaxed)))),
            None => self.line(false),
        }
    }

    /// The work is known: `messages` to copy, `bytes` of them as far as known.
    pub fn start(&self, messages: u64, bytes: u64) {
        let i = &self.inner;
        i.total.store(messages, Ordering::Relaxed);
        i.total_bytes.store(bytes, Ordering::Relaxed);
        if let Ok(mut s) = i.started.lock() {
            *s = Instant::now();
        }
        if let Some(bar) = &i.bar {
            bar.set_length(messages);
            bar.reset_eta();
        }
        if let Some(o) = &i.overall {
            o.inc_length(messages);
        }
        let size = if bytes > 0 { format!(" ({})", crate::admin::human(bytes)) } else { String::new() };
        eprintln_plain(i, &format!("{} {}: {messages} messages{size} to copy", i.verb, i.address));
    }

    /// `messages` more are done (copied or refused), `bytes` of them copied.
    pub fn add(&self, messages: u64, bytes: u64) {
        let i = &self.inner;
        i.done.fetch_add(messages, Ordering::Relaxed);
        i.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &i.bar {
            bar.inc(messages);
            let phase = i.phase.lock().map(|p| p.clone()).unwrap_or_default();
            bar.set_message(format!("{} - {phase}", crate::admin::human(i.bytes.load(Ordering::Relaxed))));
        }
        if let Some(o) = &i.overall {
            o.inc(messages);
        }
        self.line(false);
    }

    /// `done` are done in all (for progress reported as totals).
    pub fn set(&self, done: u64) {
        let before = self.inner.done.load(Ordering::Relaxed);
        if done > before {
            self.add(done - before, 0);
        }
    }

    /// Ends the account's bar, or prints its last line.
    pub fn finish(&self, summary: &str) {
        let i = &self.inner;
        match &i.bar {
            Some(bar) => bar.finish_with_message(summary.to_string()),
            None => eprintln!("{} {}: {summary}", i.verb, i.address),
        }
    }

    /// A plain line, at most every [`LINE_EVERY`] unless forced; nothing on a terminal.
    fn line(&self, force: bool) {
        let i = &self.inner;
        if i.bar.is_some() {
            return;
        }
        let Ok(mut last) = i.last_line.lock() else { return };
        if !force && last.elapsed() < LINE_EVERY {
            return;
        }
        *last = Instant::now();
        let (done, total) = (i.done.load(Ordering::Relaxed), i.total.load(Ordering::Relaxed));
        let bytes = i.bytes.load(Ordering::Relaxed);
        let elapsed = i.started.lock().map(|s| s.elapsed()).unwrap_or_default().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let eta =
            if rate > 0.0 && total > done { format!("{:.0} s", (total - done) as f64 / rate) } else { "-".into() };
        let phase = i.phase.lock().map(|p| p.clone()).unwrap_or_default();
        eprintln!(
            "{} {}: {done}/{total} messages, {}, {rate:.0} msg/s, eta {eta} ({phase})",
            i.verb,
            i.address,
            crate::admin::human(bytes)
        );
    }
}

fn eprintln_plain(i: &Inner, line: &str) {
    if i.bar.is_none() {
        eprintln!("{line}");
    }
}
