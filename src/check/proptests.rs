//! Property tests of the answer cache: whatever the sequence of operations, its bounds hold
//! and a hit is the value last stored for its key. Each property runs on 512 generated
//! inputs (`PROPTEST_CASES=N` for more):
//!
//!     cargo test --release --lib proptests

use std::collections::HashMap;

use proptest::collection::vec;
use proptest::prelude::*;

use super::cache::{Cache, Lookup};
use super::proptest_config as config;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key: u128,
        now: u64,
        until: u64,
    },
    InsertNegative {
        key: u128,
        now: u64,
    },
    Lookup {
        key: u128,
        now: u64,
        ttl: u64,
        negative_ttl: u64,
    },
    Remove {
        key: u128,
    },
}

fn time_ms() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..100_000, 1 => any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u128..24;
    prop_oneof![
        4 => (key.clone(), time_ms(), time_ms())
            .prop_map(|(key, now, until)| Op::Insert { key, now, until }),
        2 => (key.clone(), time_ms()).prop_map(|(key, now)| Op::InsertNegative { key, now }),
        4 => (key.clone(), time_ms(), time_ms(), time_ms())
            .prop_map(|(key, now, ttl, negative_ttl)| Op::Lookup { key, now, ttl, negative_ttl }),
        1 => key.prop_map(|key| Op::Remove { key }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Whatever happens, neither map grows past the capacity, and a hit is always the value
    /// last stored for its key (never another key's, never one replaced or removed since).
    #[test]
    fn cache_capacity_is_never_exceeded(capacity in 0usize..8, ops in vec(op(), 1..200)) {
        let mut cache: Cache<usize> = Cache::new(capacity);
        // key -> (last value stored, if not dropped since; rejected since?)
        let mut model: HashMap<u128, (Option<usize>, bool)> = HashMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert { key, now, until } => {
                    cache.insert(key, i, now, until);
                    let stored = capacity > 0 && until > now;
                    model.insert(key, (stored.then_some(i), false));
                }
                Op::InsertNegative { key, now } => {
                    cache.insert_negative(key, now);
                    model.insert(key, (None, capacity > 0));
                }
                Op::Remove { key } => {
                    cache.remove(key);
                    model.insert(key, (None, false));
                }
                Op::Lookup { key, now, ttl, negative_ttl } => {
                    let (value, rejected) = model.get(&key).copied().unwrap_or((None, false));
                    match cache.lookup(key, now, ttl, negative_ttl) {
                        Lookup::Hit(v) => prop_assert_eq!(Some(v), value, "hit for key {}", key),
                        Lookup::NegativeHit => prop_assert!(rejected, "negative hit for key {}", key),
                        Lookup::Expired | Lookup::Miss => {}
                    }
                }
            }
            prop_assert!(cache.len() <= capacity, "{} positive entries, capacity {}", cache.len(), capacity);
            prop_assert!(cache.negative_len() <= capacity, "{} negative entries, capacity {}", cache.negative_len(), capacity);
            prop_assert_eq!(cache.capacity(), capacity);
        }
    }
}
