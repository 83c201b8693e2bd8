//! Progress of long CLI jobs: a live line on a terminal, a log line every
//! ten seconds otherwise (a Kubernetes Job, a cron mail), so an operator can
//! tell a slow rebuild from a stuck one.

use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Report `position` (0..=`total`, in `unit`) until the task is aborted.
pub async fn follow(
    label: &'static str,
    unit: &'static str,
    total: u64,
    mut position: watch::Receiver<u64>,
) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(10)
    };
    loop {
        // Wake on the period, not on every change: the position moves fast.
        tokio::time::sleep(every).await;
        let done = *position.borrow_and_update();
        let line = line(label, unit, done, total, started.elapsed());
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            tracing::info!("{line}");
        }
        if position.has_changed().is_err() {
            return;
        }
    }
}

/// Erase the live line before the final message.
pub fn clear() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

fn line(label: &str, unit: &str, done: u64, total: u64, took: Duration) -> String {
    let done = done.min(total);
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let secs = took.as_secs_f64();
    let eta = if done > 0 && done < total {
        format!(", ~{:.0}s left", secs * (total - done) as f64 / done as f64)
    } else {
        String::new()
    };
    format!("{label}: {pct:.0}% ({done} of {total} {unit}, {secs:.0}s{eta})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            line("rebuild", "changes", 250, 1000, Duration::from_secs(5)),
            "rebuild: 25% (250 of 1000 changes, 5s, ~15s left)"
        );
        assert_eq!(
            line("rebuild", "changes", 0, 0, Duration::ZERO),
            "rebuild: 100% (0 of 0 changes, 0s)"
        );
        // A position past the total (writes during the job) caps at 100%.
        assert_eq!(
            line("rebuild", "changes", 1200, 1000, Duration::from_secs(2)),
            "rebuild: 100% (1000 of 1000 changes, 2s)"
        );
    }
}
