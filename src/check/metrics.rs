//! Counters shared by all workers and their Prometheus text exposition (no nginx types).
//!
//! `Metrics` is placed in nginx shared memory, so every field is an atomic: workers update
//! it concurrently without locks, and the status handler of any worker reads the sum. Every
//! kind of check has the same set of counters ([`CheckMetrics`]), exposed under its own
//! prefix.

use core::fmt::Write;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use super::decision::{Counter, Decision};

/// Upper bounds of the call latency histogram, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// The counters of every kind of check.
#[repr(C)]
#[derive(Default)]
pub struct Metrics {
    pub session: CheckMetrics,
    pub oauth2: CheckMetrics,
    pub permission: CheckMetrics,
    pub jwt_signatures: SignatureMetrics,
}

impl Metrics {
    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        self.session.render_into(&mut out, &SESSION_NAMES);
        self.oauth2.render_into(&mut out, &OAUTH2_NAMES);
        self.permission.render_into(&mut out, &PERMISSION_NAMES);
        self.jwt_signatures.render_into(&mut out);
        out
    }
}

/// How one kind of check is named in the exposition.
pub struct Names {
    /// Prefix of every series, the check's directive.
    pub prefix: &'static str,
    /// What one entry of its cache holds, capitalised ("Sessions").
    pub entries: &'static str,
    /// The service it asks.
    pub service: &'static str,
    /// The call it makes, as it appears in series names ("whoami").
    pub call: &'static str,
}

pub const SESSION_NAMES: Names = Names {
    prefix: "ory_session",
    entries: "Sessions",
    service: "Kratos",
    call: "whoami",
};

pub const OAUTH2_NAMES: Names = Names {
    prefix: "ory_oauth2",
    entries: "Access tokens",
    service: "Hydra",
    call: "introspection",
};

pub const PERMISSION_NAMES: Names = Names {
    prefix: "ory_permission",
    entries: "Permission answers",
    service: "Keto",
    call: "check",
};

/// The counters of one kind of check.
#[repr(C)]
#[derive(Default)]
pub struct CheckMetrics {
    /// Decisions by [`Counter`], in the order of [`Counter::ALL`].
    decisions: [AtomicU64; Counter::ALL.len()],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_evictions: AtomicU64,
    cache_entries: AtomicI64,
    calls: AtomicU64,
    in_flight: AtomicI64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

impl CheckMetrics {
    pub fn decision(&self, decision: Decision) {
        self.decisions[decision.counter() as usize].fetch_add(1, Relaxed);
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
        self.calls.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A call ended: with its latency when the service answered, without when it was
    /// cancelled.
    pub fn call_ended(&self, latency_ms: Option<u64>) {
        self.in_flight.fetch_sub(1, Relaxed);
        let Some(ms) = latency_ms else { return };
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|&le| ms <= le) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ms.fetch_add(ms, Relaxed);
    }

    /// Appends this check's series to `out`.
    pub fn render_into(&self, out: &mut String, names: &Names) {
        let Names {
            prefix,
            entries,
            service,
            call,
        } = names;
        let get = |c: &AtomicU64| c.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP {prefix}_decisions_total Requests decided by {prefix}, by outcome.\n\
             # TYPE {prefix}_decisions_total counter"
        );
        for (counter, c) in Counter::ALL.iter().zip(&self.decisions) {
            let _ = writeln!(
                out,
                "{prefix}_decisions_total{{outcome=\"{}\"}} {}",
                counter.label(),
                get(c)
            );
        }
        let series = |out: &mut String, kind: &str, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n{prefix}_{name} {}",
                value.max(0)
            );
        };
        let count = |c: &AtomicU64| i64::try_from(get(c)).unwrap_or(i64::MAX);
        series(
            out,
            "counter",
            "cache_hits_total",
            "Cache lookups answered from the cache.",
            count(&self.cache_hits),
        );
        series(
            out,
            "counter",
            "cache_misses_total",
            &format!("Cache lookups that needed {service}."),
            count(&self.cache_misses),
        );
        series(
            out,
            "counter",
            "cache_evictions_total",
            &format!("{entries} pushed out of a full cache."),
            count(&self.cache_evictions),
        );
        series(
            out,
            "gauge",
            "cache_entries",
            &format!("{entries} cached, all workers."),
            self.cache_entries.load(Relaxed),
        );
        series(
            out,
            "counter",
            &format!("{call}_calls_total"),
            &format!("Calls made to {service} {call}."),
            count(&self.calls),
        );
        series(
            out,
            "gauge",
            &format!("{call}_in_flight"),
            &format!("Calls to {service} waiting for an answer."),
            self.in_flight.load(Relaxed),
        );

        let name = format!("{prefix}_{call}_duration_seconds");
        let _ = writeln!(
            out,
            "# HELP {name} Time {service} took to answer {call}.\n# TYPE {name} histogram"
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
    }
}

/// The JWT signatures `ory_oauth2` checks with the worker's keys: the one cost of a JWT
/// that grows with the key (an RS256-4096 check is about 90 µs), so an operator can see what
/// a cache TTL or a smaller key would save.
#[repr(C)]
#[derive(Default)]
pub struct SignatureMetrics {
    checks: AtomicU64,
    nanos: AtomicU64,
}

impl SignatureMetrics {
    pub fn checked(&self, took: core::time::Duration) {
        self.checks.fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Relaxed);
    }

    fn render_into(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ory_oauth2_jwt_signature_checks_total JWT signatures checked.\n\
             # TYPE ory_oauth2_jwt_signature_checks_total counter\n\
             ory_oauth2_jwt_signature_checks_total {}\n\
             # HELP ory_oauth2_jwt_signature_seconds_total Time spent checking JWT signatures.\n\
             # TYPE ory_oauth2_jwt_signature_seconds_total counter\n\
             ory_oauth2_jwt_signature_seconds_total {}",
            self.checks.load(Relaxed),
            self.nanos.load(Relaxed) as f64 / 1e9
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::decision::Outcome;

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
    fn signature_checks_are_counted_with_their_time() {
        let m = Metrics::default();
        let text = m.render();
        assert_eq!(value(&text, "ory_oauth2_jwt_signature_checks_total"), "0");
        assert_eq!(value(&text, "ory_oauth2_jwt_signature_seconds_total"), "0");
        m.jwt_signatures
            .checked(core::time::Duration::from_micros(90));
        m.jwt_signatures
            .checked(core::time::Duration::from_micros(110));
        let text = m.render();
        assert_eq!(value(&text, "ory_oauth2_jwt_signature_checks_total"), "2");
        assert_eq!(
            value(&text, "ory_oauth2_jwt_signature_seconds_total"),
            "0.0002"
        );
        assert!(text.contains("# TYPE ory_oauth2_jwt_signature_seconds_total counter\n"));
    }

    #[test]
    fn decisions_are_counted_by_outcome() {
        let m = Metrics::default();
        m.session.decision(Decision::Continue);
        m.session.decision(Decision::Continue);
        m.session.decision(Decision::Redirect);
        m.session.decision(Decision::Refuse(Outcome::Timeout));
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
        m.session.call_started();
        m.session.call_started();
        m.session.call_started();
        m.session.call_ended(Some(3));
        m.session.call_ended(Some(40));
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
        m.session.cache_changed(5, 0);
        m.session.cache_changed(-2, 1);
        m.session.cache_lookup(true);
        m.session.cache_lookup(false);
        let text = m.render();
        assert_eq!(value(&text, "ory_session_cache_entries"), "3");
        assert_eq!(value(&text, "ory_session_cache_evictions_total"), "1");
        assert_eq!(value(&text, "ory_session_cache_hits_total"), "1");
        assert_eq!(value(&text, "ory_session_cache_misses_total"), "1");
    }

    #[test]
    fn every_check_has_its_own_series() {
        let m = Metrics::default();
        m.permission.decision(Decision::Refuse(Outcome::Forbidden));
        m.permission.call_started();
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "ory_permission_decisions_total{outcome=\"forbidden\"}"
            ),
            "1"
        );
        assert_eq!(
            value(&text, "ory_session_decisions_total{outcome=\"forbidden\"}"),
            "0"
        );
        assert_eq!(value(&text, "ory_permission_check_calls_total"), "1");
        assert_eq!(value(&text, "ory_permission_check_in_flight"), "1");
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
