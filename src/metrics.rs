//! Counters shared by all workers and their Prometheus text exposition (no nginx types).
//!
//! `Metrics` is placed in nginx shared memory, so every field is an atomic: workers update
//! it concurrently without locks, and the status handler of any worker reads the sum.

use core::fmt::Write;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::decision::Outcome;

/// Upper bounds of the whoami latency histogram, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// What a request's decision looked like from outside: a redirect is counted apart from the
/// outcome that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Outcome(Outcome),
    Redirect,
}

#[repr(C)]
#[derive(Default)]
pub struct Metrics {
    allowed: AtomicU64,
    unauthenticated: AtomicU64,
    forbidden: AtomicU64,
    redirect: AtomicU64,
    bad_gateway: AtomicU64,
    unavailable: AtomicU64,
    timeout: AtomicU64,
    internal: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_evictions: AtomicU64,
    cache_entries: AtomicI64,
    whoami_calls: AtomicU64,
    in_flight: AtomicI64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

impl Metrics {
    pub fn decision(&self, decision: Decision) {
        let counter = match decision {
            Decision::Redirect => &self.redirect,
            Decision::Outcome(Outcome::Allowed) => &self.allowed,
            Decision::Outcome(Outcome::Unauthenticated) => &self.unauthenticated,
            Decision::Outcome(Outcome::Forbidden) => &self.forbidden,
            Decision::Outcome(Outcome::BadGateway) => &self.bad_gateway,
            Decision::Outcome(Outcome::Unavailable) => &self.unavailable,
            Decision::Outcome(Outcome::Timeout) => &self.timeout,
            Decision::Outcome(Outcome::Internal) => &self.internal,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        }
        .fetch_add(1, Relaxed);
    }

    /// Entries and evictions are reported by each worker as changes, so the shared figures
    /// are sums over workers.
    pub fn cache_changed(&self, entries_delta: i64, evictions_delta: u64) {
        if entries_delta != 0 {
            self.cache_entries.fetch_add(entries_delta, Relaxed);
        }
        if evictions_delta != 0 {
            self.cache_evictions.fetch_add(evictions_delta, Relaxed);
        }
    }

    pub fn call_started(&self) {
        self.whoami_calls.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A call ended: with its latency when Kratos answered, without when it was cancelled.
    pub fn call_ended(&self, latency_ms: Option<u64>) {
        self.in_flight.fetch_sub(1, Relaxed);
        let Some(ms) = latency_ms else { return };
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|&le| ms <= le) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ms.fetch_add(ms, Relaxed);
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP ory_session_decisions_total Requests decided by ory_session, by outcome."
        );
        let _ = writeln!(out, "# TYPE ory_session_decisions_total counter");
        for (name, c) in [
            ("allowed", &self.allowed),
            ("unauthenticated", &self.unauthenticated),
            ("forbidden", &self.forbidden),
            ("redirect", &self.redirect),
            ("bad_gateway", &self.bad_gateway),
            ("unavailable", &self.unavailable),
            ("timeout", &self.timeout),
            ("internal_error", &self.internal),
        ] {
            let _ = writeln!(
                out,
                "ory_session_decisions_total{{outcome=\"{name}\"}} {}",
                get(c)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                value.max(0)
            );
        };
        counter(
            &mut out,
            "ory_session_cache_hits_total",
            "Cache lookups answered from the cache.",
            get(&self.cache_hits),
        );
        counter(
            &mut out,
            "ory_session_cache_misses_total",
            "Cache lookups that needed Kratos.",
            get(&self.cache_misses),
        );
        counter(
            &mut out,
            "ory_session_cache_evictions_total",
            "Sessions pushed out of a full cache.",
            get(&self.cache_evictions),
        );
        gauge(
            &mut out,
            "ory_session_cache_entries",
            "Sessions cached, all workers.",
            self.cache_entries.load(Relaxed),
        );
        counter(
            &mut out,
            "ory_session_whoami_calls_total",
            "Calls made to Kratos whoami.",
            get(&self.whoami_calls),
        );
        gauge(
            &mut out,
            "ory_session_whoami_in_flight",
            "Calls to Kratos waiting for an answer.",
            self.in_flight.load(Relaxed),
        );

        let name = "ory_session_whoami_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time Kratos took to answer whoami.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (le, c) in LATENCY_BUCKETS_MS.iter().zip(&self.latency_buckets) {
            cumulative += get(c);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *le as f64 / 1000.0
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&self.latency_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn decisions_are_counted_by_outcome() {
        let m = Metrics::default();
        m.decision(Decision::Outcome(Outcome::Allowed));
        m.decision(Decision::Outcome(Outcome::Allowed));
        m.decision(Decision::Redirect);
        m.decision(Decision::Outcome(Outcome::Timeout));
        let text = m.render();
        assert_eq!(
            value(&text, "ory_session_decisions_total{outcome=\"allowed\"}"),
            "2"
        );
        assert_eq!(
            value(&text, "ory_session_decisions_total{outcome=\"redirect\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "ory_session_decisions_total{outcome=\"timeout\"}"),
            "1"
        );
        assert_eq!(
            value(
                &text,
                "ory_session_decisions_total{outcome=\"bad_gateway\"}"
            ),
            "0"
        );
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::default();
        m.call_started();
        m.call_started();
        m.call_started();
        m.call_ended(Some(3));
        m.call_ended(Some(40));
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "ory_session_whoami_duration_seconds_bucket{le=\"0.005\"}"
            ),
            "1"
        );
        assert_eq!(
            value(
                &text,
                "ory_session_whoami_duration_seconds_bucket{le=\"0.05\"}"
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "ory_session_whoami_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            "2"
        );
        assert_eq!(
            value(&text, "ory_session_whoami_duration_seconds_count"),
            "2"
        );
        assert_eq!(
            value(&text, "ory_session_whoami_duration_seconds_sum"),
            "0.043"
        );
        assert_eq!(value(&text, "ory_session_whoami_in_flight"), "1");
        assert_eq!(value(&text, "ory_session_whoami_calls_total"), "3");
    }

    #[test]
    fn cache_figures_are_sums_of_worker_changes() {
        let m = Metrics::default();
        m.cache_changed(5, 0);
        m.cache_changed(-2, 1);
        m.cache_lookup(true);
        m.cache_lookup(false);
        let text = m.render();
        assert_eq!(value(&text, "ory_session_cache_entries"), "3");
        assert_eq!(value(&text, "ory_session_cache_evictions_total"), "1");
        assert_eq!(value(&text, "ory_session_cache_hits_total"), "1");
        assert_eq!(value(&text, "ory_session_cache_misses_total"), "1");
    }

    #[test]
    fn every_series_has_help_and_type() {
        let text = Metrics::default().render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{name}");
        }
    }
}
