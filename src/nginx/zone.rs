//! The shared cache zones: `ory_cache_zone NAME:SIZE;` declares one, `ory_cache NAME | off;`
//! makes a context's checks store their answers there. The zone's structure is plain Rust
//! (`crate::check::zone`); here it is placed in nginx shared memory, its lock is nginx's slab
//! pool mutex, and each worker attaches the zones of its own cycle when it starts.

use core::ffi::{c_char, c_void};
use core::fmt::Write;
use core::ptr;
use std::cell::RefCell;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_int_t, ngx_pagesize, ngx_parse_size,
    ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_alloc_locked,
    ngx_slab_free_locked, ngx_slab_pool_t, ngx_str_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_log_error};

use super::conf::{args, invalid_value, MainConf};
use crate::check::front::ZoneAccess;
use crate::check::key::{random_secret, Scope};
use crate::check::zone::{Heap, Zone, ZoneStats};

/// The smallest zone: the header with its ring of revocations takes about 40 KiB, and a zone
/// should hold some hundreds of sessions besides.
const MIN_SIZE: usize = 256 * 1024;

/// A zone declared by `ory_cache_zone`, in the main configuration.
pub struct ZoneDecl {
    pub name: String,
    pub size: usize,
    pub shm: *mut ngx_shm_zone_t,
}

/// Tells nginx's zones of this kind from any other module's, and from the module's counters.
static ZONE_TAG: u8 = 0;

/// `ory_cache_zone NAME:SIZE;`
pub unsafe extern "C" fn set_cache_zone(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let main = &mut *conf.cast::<MainConf>();
    let value = &args(cf)[0];
    let text = value.as_bytes();
    let Some(colon) = text.iter().rposition(|&b| b == b':') else {
        return invalid_value(cf, cmd, value, "it must be NAME:SIZE");
    };
    let name = &text[..colon];
    if name.is_empty() {
        return invalid_value(cf, cmd, value, "the zone has no name");
    }
    if name == b"ory_session" {
        return invalid_value(
            cf,
            cmd,
            value,
            "\"ory_session\" names the module's counters",
        );
    }
    let mut size_text = ngx_str_t {
        len: text.len() - colon - 1,
        data: value.data.add(colon + 1),
    };
    let size = ngx_parse_size(&mut size_text);
    if size == NGX_ERROR as isize {
        return invalid_value(cf, cmd, value, "invalid zone size");
    }
    if (size as usize) < MIN_SIZE {
        return invalid_value(cf, cmd, value, "the zone must be at least 256k");
    }
    let name_text = String::from_utf8_lossy(name).into_owned();
    if main.zones.iter().any(|z| z.name == name_text) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "ory_cache_zone \"{}\" is duplicate",
            name_text
        );
        return NGX_CONF_ERROR;
    }
    let mut shm_name = ngx_str_t {
        len: colon,
        data: value.data,
    };
    let tag = (&raw const ZONE_TAG).cast_mut().cast();
    let shm = ngx_shared_memory_add(cf, &mut shm_name, size as usize, tag);
    if shm.is_null() {
        return NGX_CONF_ERROR;
    }
    (*shm).init = Some(init_zone);
    (*shm).data = ptr::null_mut();
    main.zones.push(ZoneDecl {
        name: name_text,
        size: size as usize,
        shm,
    });
    NGX_CONF_OK
}

/// Called by nginx in the master when the zone is mapped, before workers exist. `previous`
/// is the zone's data in the old cycle when a reload keeps the zone (same name and size):
/// the entries, their secret and the counters carry over. A zone of another size is a new
/// zone, and starts empty.
unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, previous: *mut c_void) -> ngx_int_t {
    let pool = (*shm).shm.addr.cast::<ngx_slab_pool_t>();
    // A full zone is expected and handled (entries are evicted): no "no memory" log lines.
    (*pool).set_log_nomem(0);
    if !previous.is_null() {
        if !(*previous.cast::<Zone>()).is_ours() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*shm).shm.log,
                "ory_cache_zone \"{}\" was made by another version of the module: give it \
                 another name or size",
                String::from_utf8_lossy((*shm).shm.name.as_bytes())
            );
            return NGX_ERROR as ngx_int_t;
        }
        (*shm).data = previous;
        return NGX_OK as ngx_int_t;
    }
    let heap = SlabHeap(pool);
    ngx_shmtx_lock(&mut (*pool).mutex);
    let zone = Zone::create(&heap, (*shm).shm.size, random_secret());
    ngx_shmtx_unlock(&mut (*pool).mutex);
    if zone.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    (*shm).data = zone.cast();
    NGX_OK as ngx_int_t
}

/// nginx's slab allocator, used with the pool's mutex held.
pub struct SlabHeap(*mut ngx_slab_pool_t);

// SAFETY: slab allocations are aligned to at least 8 bytes (small ones to their size rounded
// up to a power of two, large ones to pages), and live in the zone, which every process of
// the cycle maps at the same address. The callers hold the pool's mutex (`Shared`).
unsafe impl Heap for SlabHeap {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: the pool is the zone's, and its mutex is held.
        unsafe { ngx_slab_alloc_locked(self.0, size).cast() }
    }

    unsafe fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: the caller's: p came from alloc; the mutex is held.
        unsafe { ngx_slab_free_locked(self.0, p.cast()) }
    }
}

/// A zone as a worker uses it: valid for the whole life of the worker, which belongs to the
/// cycle that mapped the zone.
#[derive(Clone, Copy)]
pub struct Shared {
    pool: *mut ngx_slab_pool_t,
    zone: *mut Zone,
}

impl Shared {
    pub fn secret(&self) -> [u8; crate::check::key::SECRET_LEN] {
        // SAFETY: the zone is alive for the worker's life (see the type); the secret never
        // changes after the zone is made.
        unsafe { *(*self.zone).secret() }
    }
}

/// Unlocks the zone when dropped, also when what ran under the lock panicked: a lock left
/// held would stop every worker.
struct Unlock(*mut ngx_slab_pool_t);

impl Drop for Unlock {
    fn drop(&mut self) {
        // SAFETY: made right after the lock was taken, on the same pool.
        unsafe { ngx_shmtx_unlock(&mut (*self.0).mutex) };
    }
}

impl ZoneAccess for Shared {
    type Heap = SlabHeap;

    #[inline]
    fn generation(&self) -> u64 {
        // SAFETY: see the type; the generation is an atomic, read without the lock.
        unsafe { (*self.zone).generation() }
    }

    fn with_locked<T>(&self, f: impl FnOnce(&mut Zone, &SlabHeap) -> T) -> T {
        // SAFETY: see the type. With the pool's mutex held this process is the only one
        // touching the zone's structure, so a unique reference to it is sound.
        unsafe {
            ngx_shmtx_lock(&mut (*self.pool).mutex);
            let _unlock = Unlock(self.pool);
            f(&mut *self.zone, &SlabHeap(self.pool))
        }
    }
}

/// What a worker knows of the zones of its cycle.
pub struct Attached {
    pub name: String,
    pub size: usize,
    pub shared: Shared,
}

thread_local! {
    static ZONES: RefCell<Vec<Attached>> = const { RefCell::new(Vec::new()) };
    /// The settings that enter session keys (the whoami URL with its query) of every location
    /// that checks sessions: a logout evicts the credential under each.
    static SESSION_SCOPES: RefCell<Vec<Scope>> = const { RefCell::new(Vec::new()) };
}

/// Attaches the worker to the zones of its cycle, in `init_process`.
///
/// # Safety
/// `mcf` is the main configuration of the worker's cycle, whose zones are initialized.
pub unsafe fn attach(mcf: &MainConf) -> Vec<Shared> {
    let attached: Vec<Attached> = mcf
        .zones
        .iter()
        .filter_map(|z| {
            let zone = (*z.shm).data.cast::<Zone>();
            let pool = (*z.shm).shm.addr.cast::<ngx_slab_pool_t>();
            (!zone.is_null()).then(|| Attached {
                name: z.name.clone(),
                size: z.size,
                shared: Shared { pool, zone },
            })
        })
        .collect();
    let shared = attached.iter().map(|a| a.shared).collect();
    ZONES.with(|z| *z.borrow_mut() = attached);
    SESSION_SCOPES.with(|s| *s.borrow_mut() = mcf.session_scopes.clone());
    shared
}

/// Calls `f` with every zone of the worker, by its number in `ory_cache` (0 is the first).
pub fn each(mut f: impl FnMut(usize, &Attached)) {
    ZONES.with(|z| {
        for (i, a) in z.borrow().iter().enumerate() {
            f(i, a);
        }
    });
}

pub fn session_scopes() -> Vec<Scope> {
    SESSION_SCOPES.with(|s| s.borrow().clone())
}

/// The zones' series for the status page.
pub fn render_into(out: &mut String) {
    let mut rows: Vec<(String, usize, ZoneStats, usize)> = Vec::new();
    each(|_, a| {
        let (stats, free) = a.shared.with_locked(|z, _| {
            // SAFETY: the pool is the zone's, its mutex held.
            let free = unsafe { (*a.shared.pool).pfree * ngx_pagesize };
            (z.stats(), free)
        });
        rows.push((a.name.clone(), a.size, stats, free));
    });
    if rows.is_empty() {
        return;
    }
    type Pick = fn(&(String, usize, ZoneStats, usize)) -> u64;
    let series: [(&str, &str, &str, Pick); 9] = [
        ("entries", "gauge", "Answers held by the zone.", |r| {
            r.2.entries
        }),
        (
            "negative_entries",
            "gauge",
            "Refusals held by the zone.",
            |r| r.2.negative_entries,
        ),
        (
            "entry_bytes",
            "gauge",
            "Bytes the zone's entries take.",
            |r| r.2.bytes,
        ),
        ("size_bytes", "gauge", "The zone's size.", |r| r.1 as u64),
        (
            "free_bytes",
            "gauge",
            "The zone's free pages, in bytes.",
            |r| r.3 as u64,
        ),
        (
            "evictions_total",
            "counter",
            "Entries pushed out of the full zone.",
            |r| r.2.evictions,
        ),
        (
            "not_stored_total",
            "counter",
            "Answers the full zone could not make room for.",
            |r| r.2.not_stored,
        ),
        (
            "revocations_total",
            "counter",
            "Logouts and purges seen by the zone.",
            |r| r.2.revocations,
        ),
        (
            "revoked_total",
            "counter",
            "Entries removed by logouts and purges.",
            |r| r.2.revoked,
        ),
    ];
    for (name, kind, help, pick) in series {
        let _ = writeln!(
            out,
            "# HELP ory_cache_zone_{name} {help}\n# TYPE ory_cache_zone_{name} {kind}"
        );
        for row in &rows {
            let _ = writeln!(
                out,
                "ory_cache_zone_{name}{{zone=\"{}\"}} {}",
                row.0,
                pick(row)
            );
        }
    }
}

/// The worker is leaving.
pub fn detach(_cycle: *mut ngx_cycle_t) {
    ZONES.with(|z| z.borrow_mut().clear());
}
