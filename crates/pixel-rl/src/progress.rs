//! A progress bar for a training stage (indicatif), and plain progress lines where a bar would not be seen.
//!
//! On a terminal, [`StageProgress`] draws a bar on stderr: the label, the position out of the total, the
//! elapsed time and an estimate of the time left, and the latest message (loss, reward, ...). When stderr
//! is not a terminal (CI, a log file) or the environment variable `PIXEL_PROGRESS` is `0`, there is no
//! bar: instead a plain line is printed on stderr each time another tenth of the total is done, e.g.
//! `grpo: 30/100 (30%) 12.4s loss 0.412`, and one when the stage finishes.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar (indicatif) for a training stage: `stage(label, total)`, `.set_message(..)` with the latest loss/reward, `.inc(n)`, `.finish()`.
/// Hidden when stderr is not a terminal or when PIXEL_PROGRESS=0, so CI logs stay readable; in that case it prints a plain
/// line every ~10% instead.
///
/// Every method takes `&self`, and it is `Send + Sync`: it can be shared with the threads doing the work.
#[derive(Debug)]
pub struct StageProgress {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Bar(ProgressBar),
    Plain(Mutex<Plain>),
    /// Shows nothing (a data-parallel rank other than 0: rank 0 shows the stage).
    Hidden,
}

/// The state of the plain-line mode.
#[derive(Debug)]
struct Plain {
    label: String,
    total: u64,
    position: u64,
    message: String,
    /// Tenths of the total already reported.
    reported_tenths: u64,
    finished: bool,
    started: Instant,
}

impl Plain {
    fn line(&self) -> String {
        let mut line = format!("{}: {}", self.label, self.position);
        if self.total > 0 {
            let percent = (self.position as f64 / self.total as f64 * 100.0).floor();
            line.push_str(&format!("/{} ({percent:.0}%)", self.total));
        }
        line.push_str(&format!(" {:.1}s", self.started.elapsed().as_secs_f64()));
        if !self.message.is_empty() {
            line.push(' ');
            line.push_str(&self.message);
        }
        line
    }

    /// Advances by `n` and returns the line to print if another tenth was completed.
    fn advance(&mut self, n: u64) -> Option<String> {
        self.position = self.position.saturating_add(n);
        if self.total == 0 || self.finished {
            return None;
        }
        let tenths = (self.position.min(self.total) as u128 * 10 / self.total as u128) as u64;
        if tenths > self.reported_tenths {
            self.reported_tenths = tenths;
            Some(self.line())
        } else {
            None
        }
    }

    /// Marks the stage finished and returns the closing line (once).
    fn finish(&mut self) -> Option<String> {
        if self.finished {
            return None;
        }
        self.finished = true;
        // The line at 100% already said all there is, unless the message changed since; print anyway for
        // stages that end early (and for totals of 0), so the log always shows where a stage stopped.
        let done = self.total > 0 && self.reported_tenths >= 10;
        (!done).then(|| format!("{} (done)", self.line()))
    }
}

impl StageProgress {
    /// A progress display for a stage of `total` steps (0 when unknown), labelled `label`.
    pub fn new(label: &str, total: u64) -> Self {
        let disabled = std::env::var_os("PIXEL_PROGRESS").is_some_and(|v| v == "0");
        if disabled || !std::io::stderr().is_terminal() {
            return Self::plain(label, total);
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let template = if total > 0 {
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise} (eta {eta}) {msg}"
        } else {
            "{prefix:.bold} {spinner} {pos} {elapsed_precise} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        Self {
            inner: Inner::Bar(bar),
        }
    }

    /// A progress display that shows nothing: for the ranks of a data-parallel run other than rank 0,
    /// which take the same steps (one display per stage).
    pub fn hidden() -> Self {
        Self {
            inner: Inner::Hidden,
        }
    }

    /// [`StageProgress::new`] on rank 0 (or without data parallel), [`StageProgress::hidden`] on the others.
    pub fn for_rank(label: &str, total: u64, rank: Option<usize>) -> Self {
        match rank {
            Some(r) if r > 0 => Self::hidden(),
            _ => Self::new(label, total),
        }
    }

    /// The plain-line mode, whatever stderr is.
    fn plain(label: &str, total: u64) -> Self {
        Self {
            inner: Inner::Plain(Mutex::new(Plain {
                label: label.to_string(),
                total,
                position: 0,
                message: String::new(),
                reported_tenths: 0,
                finished: false,
                started: Instant::now(),
            })),
        }
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        match &self.inner {
            Inner::Bar(bar) => bar.inc(n),
            Inner::Plain(plain) => {
                let line = lock(plain).advance(n);
                if let Some(line) = line {
                    eprintln!("{line}");
                }
            }
            Inner::Hidden => {}
        }
    }

    /// Sets the message shown after the position (the latest loss, reward, ...).
    pub fn set_message(&self, msg: String) {
        match &self.inner {
            Inner::Bar(bar) => bar.set_message(msg),
            Inner::Plain(plain) => lock(plain).message = msg,
            Inner::Hidden => {}
        }
    }

    /// Ends the stage: the bar stays on screen as it is; in plain mode a closing line is printed unless the
    /// line at 100% was just printed. Calling it again does nothing.
    pub fn finish(&self) {
        match &self.inner {
            Inner::Bar(bar) => {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
            Inner::Plain(plain) => {
                let line = lock(plain).finish();
                if let Some(line) = line {
                    eprintln!("{line}");
                }
            }
            Inner::Hidden => {}
        }
    }
}

/// The state even if another thread panicked while holding it (progress display must not add a panic).
fn lock(plain: &Mutex<Plain>) -> std::sync::MutexGuard<'_, Plain> {
    plain
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(total: u64) -> Plain {
        Plain {
            label: "sft".to_string(),
            total,
            position: 0,
            message: String::new(),
            reported_tenths: 0,
            finished: false,
            started: Instant::now(),
        }
    }

    #[test]
    fn plain_mode_reports_each_tenth_once() {
        let mut p = plain(100);
        let lines: Vec<String> = (0..100).filter_map(|_| p.advance(1)).collect();
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert!(lines[0].starts_with("sft: 10/100 (10%)"), "{}", lines[0]);
        assert!(lines[9].starts_with("sft: 100/100 (100%)"), "{}", lines[9]);
        // The stage reached 100%: finishing adds nothing.
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn only_rank_0_of_a_data_parallel_run_shows_the_stage() {
        let shown = |rank| !matches!(StageProgress::for_rank("sft", 4, rank).inner, Inner::Hidden);
        assert!(shown(None));
        assert!(shown(Some(0)));
        assert!(!shown(Some(1)));
        assert!(!shown(Some(3)));
    }

    #[test]
    fn plain_mode_reports_a_big_jump_once_and_an_early_finish() {
        let mut p = plain(7);
        p.message = "loss 0.5".to_string();
        let line = p.advance(3).unwrap();
        assert!(
            line.starts_with("sft: 3/7 (42%)") && line.ends_with("loss 0.5"),
            "{line}"
        );
        assert_eq!(p.advance(0), None);
        let done = p.finish().unwrap();
        assert!(done.ends_with("(done)"), "{done}");
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn unknown_total_reports_only_at_finish() {
        let mut p = plain(0);
        assert_eq!(p.advance(5), None);
        assert!(p.finish().unwrap().starts_with("sft: 5 "));
    }

    #[test]
    fn stage_progress_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<StageProgress>();
        let progress = StageProgress::plain("x", 2);
        progress.set_message("m".to_string());
        progress.inc(2);
        progress.finish();
    }
}
