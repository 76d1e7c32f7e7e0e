//! One kind of check in one worker: its answer cache, its calls in flight and the secret of
//! its keys, with what every check does with them (cancel a call nobody waits for any more,
//! report the cache to the shared counters, rate-limit the log line of a shed request). On
//! the nginx thread only.

use std::time::Duration;

use super::cache::Cache;
use super::inflight::{CallId, InFlight};
use super::key::KeyHasher;
use super::metrics::CheckMetrics;

/// What stops a call in flight.
pub trait Cancel {
    fn cancel(&self);
}

pub struct Table<V: Clone, W, H> {
    pub cache: Cache<V>,
    pub calls: InFlight<W, H>,
    pub hasher: KeyHasher,
    /// How long one shared call may run: the longest timeout of any location, since
    /// requests with longer timeouts may join it; each request's timer ends its own wait.
    pub call_timeout: Duration,
    pub metrics: Option<&'static CheckMetrics>,
    last_shed_log_ms: u64,
    reported_len: usize,
    reported_evictions: u64,
}

impl<V: Clone, W: Copy + PartialEq, H: Cancel> Table<V, W, H> {
    pub fn new(
        cache_size: usize,
        max_calls: usize,
        call_timeout: Duration,
        metrics: Option<&'static CheckMetrics>,
    ) -> Self {
        Table {
            cache: Cache::new(cache_size),
            calls: InFlight::new(max_calls),
            hasher: KeyHasher::new_random(),
            call_timeout,
            metrics,
            last_shed_log_ms: 0,
            reported_len: 0,
            reported_evictions: 0,
        }
    }

    pub fn caching(&self) -> bool {
        self.cache.capacity() > 0
    }

    /// Removes a parked request from its call; the last one to leave cancels it.
    pub fn detach(&mut self, call: CallId, waiter: W) {
        if let Some(cancelled) = self.calls.detach(call, waiter) {
            cancelled.handle.cancel();
            if let Some(m) = self.metrics {
                m.call_ended(None);
            }
        }
    }

    /// Reports the cache's size and evictions to the shared counters as changes, so that
    /// the shared figures are sums over workers.
    pub fn report_cache(&mut self) {
        let (len, evictions) = (self.cache.len(), self.cache.evictions());
        if let Some(m) = self.metrics {
            m.cache_changed(
                len as i64 - self.reported_len as i64,
                evictions - self.reported_evictions,
            );
        }
        (self.reported_len, self.reported_evictions) = (len, evictions);
    }

    /// Whether a shed request is logged: at most once a second, since a flood is exactly
    /// when the line would repeat.
    pub fn log_shed(&mut self, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.last_shed_log_ms) < 1000 {
            return false;
        }
        self.last_shed_log_ms = now_ms;
        true
    }

    /// The worker is leaving: its entries leave the shared count with it. Its evictions stay
    /// in the total, which is a counter: Prometheus reads a counter that goes down as a
    /// restart of the whole count.
    pub fn shut_down(&mut self) {
        self.cache = Cache::new(0);
        self.reported_evictions = 0;
        self.report_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Handle<'a>(&'a Cell<u32>);

    impl Cancel for Handle<'_> {
        fn cancel(&self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn the_last_waiter_leaving_cancels_the_call() {
        let cancelled = Cell::new(0);
        let mut t: Table<(), u32, Handle> = Table::new(10, 10, Duration::from_secs(1), None);
        let id = t
            .calls
            .join_or_start(1, 1, 0, |_| Some(Handle(&cancelled)))
            .unwrap()
            .call();
        t.calls.join_or_start(1, 2, 0, |_| None).unwrap();
        t.detach(id, 1);
        assert_eq!(cancelled.get(), 0);
        t.detach(id, 2);
        assert_eq!(cancelled.get(), 1);
        assert!(t.calls.is_empty());
    }

    #[test]
    fn shed_lines_are_rate_limited() {
        let mut t: Table<(), u32, Handle> = Table::new(0, 1, Duration::from_secs(1), None);
        assert!(t.log_shed(5_000));
        assert!(!t.log_shed(5_999));
        assert!(t.log_shed(6_000));
        assert!(!t.caching());
    }

    #[test]
    fn cache_changes_reach_the_shared_counters() {
        let metrics: &'static CheckMetrics = Box::leak(Box::default());
        let mut t: Table<(), u32, Handle> = Table::new(1, 1, Duration::from_secs(1), Some(metrics));
        t.cache.insert(1, (), 0, u64::MAX);
        t.cache.insert(2, (), 0, u64::MAX); // evicts 1
        t.report_cache();
        t.report_cache(); // reports changes only
        let mut text = String::new();
        metrics.render_into(&mut text, &crate::check::metrics::SESSION_NAMES);
        assert!(text.contains("ory_session_cache_entries 1\n"), "{text}");
        assert!(
            text.contains("ory_session_cache_evictions_total 1\n"),
            "{text}"
        );
        t.shut_down();
        text.clear();
        metrics.render_into(&mut text, &crate::check::metrics::SESSION_NAMES);
        assert!(text.contains("ory_session_cache_entries 0\n"), "{text}");
        assert!(
            text.contains("ory_session_cache_evictions_total 1\n"),
            "{text}"
        );
    }
}
