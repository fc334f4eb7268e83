//! Progress reporting: a bar on a terminal, periodic structured log lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    bar: Option<ProgressBar>,
    last_log: Instant,
    every: Duration,
    started: Instant,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let bar = if std::io::stderr().is_terminal()
            && std::env::var_os("PRUNEFORGE_NO_PROGRESS").is_none()
        {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(label.clone());
            Some(b)
        } else {
            None
        };
        Self {
            label,
            total,
            done: 0,
            bar,
            last_log: Instant::now(),
            every: Duration::from_secs(15),
            started: Instant::now(),
        }
    }

    pub fn set_done(&mut self, done: u64, msg: &str) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done);
            b.set_message(msg.to_string());
        } else if self.last_log.elapsed() >= self.every || done == self.total {
            self.last_log = Instant::now();
            tracing::info!(stage = %self.label, done, total = self.total, elapsed_s = self.started.elapsed().as_secs_f64(), "{msg}");
        }
    }

    pub fn inc(&mut self, msg: &str) {
        let d = self.done + 1;
        self.set_done(d, msg);
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
