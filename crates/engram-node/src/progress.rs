//! Progress of long CLI jobs: a live line on a terminal, a log line every
//! ten seconds otherwise (a Kubernetes Job, a cron mail), so an operator can
//! tell a slow rebuild from a stuck one.

use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A running report; dropping it stops the report and erases the live line.
pub struct Report(tokio::task::JoinHandle<()>);

/// Report `position` (0..=`total`, in `unit`; `"bytes"` are shown in MiB)
/// until the returned [`Report`] is dropped.
pub fn start(
    label: &'static str,
    unit: &'static str,
    total: u64,
    position: watch::Receiver<u64>,
) -> Report {
    Report(tokio::spawn(follow(label, unit, total, position)))
}

impl Drop for Report {
    fn drop(&mut self) {
        self.0.abort();
        clear();
    }
}

async fn follow(
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
fn clear() {
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
    let (done, total, unit) = if unit == "bytes" {
        let mib = |n: u64| format!("{:.1}", n as f64 / (1024.0 * 1024.0));
        (mib(done), mib(total), "MiB")
    } else {
        (done.to_string(), total.to_string(), unit)
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
        // Bytes are shown in MiB.
        assert_eq!(
            line("upload", "bytes", 3 << 20, 12 << 20, Duration::from_secs(3)),
            "upload: 25% (3.0 of 12.0 MiB, 3s, ~9s left)"
        );
    }
}
