//! Progress of a paged listing on stderr: a bar on a terminal; otherwise (logs, CI) one line
//! about every tenth of the listing, or every 10 s when the server does not say how many remain.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::audit::Progress;

/// Between two lines when the server gives no `remainingItemCount`.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

pub enum ProgressReport {
    Off,
    Bar { bar: ProgressBar, started: Instant },
    Lines(Lines),
}

impl ProgressReport {
    pub fn new(quiet: bool) -> Self {
        let started = Instant::now();
        if quiet {
            ProgressReport::Off
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} {bar:30} {human_pos}/{human_len} pods, {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            ProgressReport::Bar { bar, started }
        } else {
            ProgressReport::Lines(Lines::new(started, LINE_INTERVAL))
        }
    }

    pub fn update(&mut self, progress: &Progress) {
        match self {
            ProgressReport::Off => {}
            ProgressReport::Bar { bar, .. } => {
                if let Some(total) = progress.total() {
                    bar.set_length(total);
                }
                bar.set_position(progress.listed as u64);
                bar.set_message(format!("{} pages", progress.pages));
            }
            ProgressReport::Lines(lines) => {
                if let Some(line) = lines.line(progress, Instant::now()) {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// The closing line: how many were listed, in how many pages and how long.
    pub fn finish(&mut self, progress: &Progress) {
        let started = match self {
            ProgressReport::Off => return,
            ProgressReport::Bar { bar, started } => {
                bar.finish_and_clear();
                *started
            }
            ProgressReport::Lines(lines) => lines.started,
        };
        eprintln!(
            "listed {} pods in {}, {:.1}s",
            progress.listed,
            pages(progress.pages),
            started.elapsed().as_secs_f64()
        );
    }
}

/// When to print a progress line on a stream that is not a terminal.
pub struct Lines {
    started: Instant,
    interval: Duration,
    last_line: Instant,
    next_tenth: u64,
}

impl Lines {
    pub fn new(started: Instant, interval: Duration) -> Self {
        Lines {
            started,
            interval,
            last_line: started,
            next_tenth: 1,
        }
    }

    /// The line to print after this page, if one is due. The end of the listing prints none:
    /// the closing line follows.
    pub fn line(&mut self, progress: &Progress, now: Instant) -> Option<String> {
        if progress.complete {
            return None;
        }
        let elapsed = now.duration_since(self.started).as_secs_f64();
        match progress.total().filter(|total| *total > 0) {
            Some(total) => {
                let tenth = progress.listed as u64 * 10 / total;
                if tenth < self.next_tenth {
                    return None;
                }
                self.next_tenth = tenth + 1;
                Some(format!(
                    "listed {} of {total} pods ({}%), {}, {elapsed:.1}s",
                    progress.listed,
                    progress.listed as u64 * 100 / total,
                    pages(progress.pages)
                ))
            }
            None => {
                if now.duration_since(self.last_line) < self.interval {
                    return None;
                }
                self.last_line = now;
                Some(format!(
                    "listed {} pods, {}, {elapsed:.1}s",
                    progress.listed,
                    pages(progress.pages)
                ))
            }
        }
    }
}

fn pages(count: usize) -> String {
    match count {
        1 => "1 page".to_string(),
        _ => format!("{count} pages"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(listed: usize, remaining: Option<u64>) -> Progress {
        Progress {
            listed,
            pages: listed / 500,
            remaining,
            complete: false,
        }
    }

    #[test]
    fn a_line_about_every_tenth_of_the_remaining_count() {
        let start = Instant::now();
        let mut lines = Lines::new(start, LINE_INTERVAL);
        let printed: Vec<String> = (1..=200)
            .filter_map(|n| {
                let mut progress = page(n * 500, Some(100_000 - n as u64 * 500));
                progress.complete = n == 200;
                lines.line(&progress, start)
            })
            .collect();
        assert_eq!(printed.len(), 9, "{printed:#?}");
        assert!(printed[0].starts_with("listed 10000 of 100000 pods (10%), 20 pages"));
        assert!(printed[8].starts_with("listed 90000 of 100000 pods (90%)"));
    }

    #[test]
    fn without_a_remaining_count_a_line_every_interval() {
        let start = Instant::now();
        let mut lines = Lines::new(start, LINE_INTERVAL);
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(lines.line(&page(500, None), at(3)), None);
        assert_eq!(
            lines.line(&page(1000, None), at(10)).as_deref(),
            Some("listed 1000 pods, 2 pages, 10.0s")
        );
        assert_eq!(lines.line(&page(1500, None), at(19)), None);
        assert!(lines.line(&page(2000, None), at(20)).is_some());
    }
}
