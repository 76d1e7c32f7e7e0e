//! Where a worker keeps the answers of one kind of check: its own cache and calls in flight,
//! and a front cache before every shared zone of its cycle.

use std::time::Duration;

use tokio::task::AbortHandle;

use super::context::Wait;
use super::zone::Shared;
use crate::check::front::Front;
use crate::check::key::KeyHasher;
use crate::check::metrics::CheckMetrics;
use crate::check::table::Table;
use crate::check::zone::Kind;

pub struct Answers<V: Clone> {
    pub table: Table<V, *mut Wait, AbortHandle>,
    /// One per zone, in the order of the main configuration's zones: `call.zone - 1`.
    pub fronts: Vec<(Front<V>, Shared)>,
}

impl<V: Clone> Answers<V> {
    /// With shared zones, `cache_size` bounds each front cache too.
    pub fn new(
        kind: Kind,
        cache_size: usize,
        max_pending: usize,
        call_timeout_ms: u64,
        metrics: Option<&'static CheckMetrics>,
        zones: &[Shared],
    ) -> Self {
        let table = Table::new(
            cache_size,
            max_pending,
            Duration::from_millis(call_timeout_ms),
            metrics,
        );
        let fronts = zones
            .iter()
            .map(|z| {
                let hasher = KeyHasher::with_secret(z.secret());
                (Front::new(cache_size, hasher, kind), *z)
            })
            .collect();
        Answers { table, fronts }
    }
}
