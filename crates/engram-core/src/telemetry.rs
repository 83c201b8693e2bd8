//! Trace context across the job queue.
//!
//! A write is acknowledged by an API node and embedded later by a worker,
//! maybe in another process. To keep one trace from the request to the worker
//! that finished it, the engine stores the request's W3C `traceparent` with
//! each embedding job, and the worker links its batch span to every job's
//! request (a batch serves many requests, so links, not parents, as the
//! OpenTelemetry messaging conventions say).
//!
//! The engine knows nothing of OpenTelemetry: the binary, which owns the
//! exporter, installs the three functions below. Without them (tracing off,
//! or in tests) every call is a no-op and no job carries a trace.

use std::sync::OnceLock;

/// How the current `tracing` span maps to and from a W3C `traceparent`.
#[derive(Clone, Copy)]
pub struct Propagation {
    /// The `traceparent` of the current span, if it is sampled and exported.
    pub current: fn() -> Option<String>,
    /// Make `span` a child of the remote span `traceparent`.
    pub set_parent: fn(&tracing::Span, &str),
    /// Link `span` to the remote span `traceparent`.
    pub add_link: fn(&tracing::Span, &str),
}

static PROPAGATION: OnceLock<Propagation> = OnceLock::new();

/// Install the propagation hooks once per process; `false` if already set.
pub fn install(p: Propagation) -> bool {
    PROPAGATION.set(p).is_ok()
}

/// The `traceparent` of the current span, to store with the work it causes.
pub fn current_traceparent() -> Option<String> {
    let p = PROPAGATION.get()?;
    (p.current)().filter(|t| is_traceparent(t))
}

/// Continue the caller's trace (e.g. an incoming `traceparent` header).
/// Malformed values are ignored: a client cannot break our tracing.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(p) = PROPAGATION.get() {
        if is_traceparent(traceparent) {
            (p.set_parent)(span, traceparent);
        }
    }
}

/// Link `span` to the span that caused its work (a queued job's request).
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    if let Some(p) = PROPAGATION.get() {
        if is_traceparent(traceparent) {
            (p.add_link)(span, traceparent);
        }
    }
}

/// W3C trace-context version 00: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`,
/// with ids not all zero.
pub fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_syntax() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ff",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn without_hooks_nothing_is_propagated() {
        // No hooks installed in this test binary.
        assert_eq!(current_traceparent(), None);
        set_parent(&tracing::Span::none(), "garbage");
    }
}
