//! Where a worker keeps the answers of one kind of check: its own cache and calls in flight,
//! and a front cache before every shared zone of its cycle.

use std::cell::RefCell;
use std::thread::LocalKey;
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

/// Where a worker keeps one check's answers: set when the worker starts, taken when it stops.
pub type Slot<V> = RefCell<Option<Answers<V>>>;

/// Sets up the worker's answers in `slot`; called from `init_process` once the bridge runs.
/// With shared zones, `cache_size` bounds each front cache too.
#[allow(clippy::too_many_arguments)]
pub fn start<V: Clone>(
    slot: &'static LocalKey<Slot<V>>,
    kind: Kind,
    cache_size: usize,
    max_pending: usize,
    call_timeout_ms: u64,
    metrics: Option<&'static CheckMetrics>,
    zones: &[Shared],
) {
    let answers = Answers::new(
        kind,
        cache_size,
        max_pending,
        call_timeout_ms,
        metrics,
        zones,
    );
    slot.with(|s| *s.borrow_mut() = Some(answers));
}

/// Runs `f` with the worker's answers; `None` when they are not set up.
pub fn with<V: Clone, T>(
    slot: &'static LocalKey<Slot<V>>,
    f: impl FnOnce(&mut Answers<V>) -> T,
) -> Option<T> {
    slot.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Cancels the calls in flight and drops the answers: the worker is stopping.
pub fn stop<V: Clone>(slot: &'static LocalKey<Slot<V>>) {
    let answers = slot.with(|s| s.borrow_mut().take());
    if let Some(mut answers) = answers {
        answers.table.shut_down();
    }
}
