//! The per-worker Kratos client runtime and the way its results come back to nginx.
//!
//! This is the only file where threads meet. The tokio side never touches nginx memory: a
//! finished call pushes `(call id, result)` onto a mutex-guarded queue and writes to an
//! eventfd. The eventfd is registered in nginx's event loop as the read side of a
//! connection, so the results are handled on the nginx thread, between other events.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_get_connection,
    ngx_handle_read_event, NGX_OK,
};

use crate::credential::OwnedCredential;
use crate::kratos::{self, Answer, KratosError};

pub type CallId = u64;
pub type WhoamiResult = Result<Answer, KratosError>;

/// What a call needs besides the credential: one value per call, cloned from the location.
pub struct CallParams {
    pub url: Arc<reqwest::Url>,
    pub timeout: Duration,
}

/// State shared with the runtime's threads.
struct Mailbox {
    done: Mutex<Vec<(CallId, WhoamiResult)>>,
    /// Owned by the nginx connection, which closes it in `stop` once the runtime is down.
    wakeup: RawFd,
}

impl Mailbox {
    fn deliver(&self, id: CallId, result: WhoamiResult) {
        // A poisoned lock only means another task panicked while pushing; the Vec is intact.
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, result));
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to an eventfd we own. It can only fail
        // with EAGAIN when the counter is about to overflow, and then a wake-up is pending
        // anyway.
        unsafe { libc::write(self.wakeup, (&raw const one).cast(), 8) };
    }
}

struct Bridge {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    mailbox: Arc<Mailbox>,
    connection: *mut ngx_connection_t,
    on_done: fn(CallId, WhoamiResult),
}

thread_local! {
    // Only the nginx thread of a worker ever sets or reads this.
    static BRIDGE: RefCell<Option<Bridge>> = const { RefCell::new(None) };
}

/// Starts the runtime and registers the wake-up in the event loop. Called from
/// `init_process`, after fork: a runtime's threads do not survive a fork.
///
/// # Safety
/// `cycle` is the worker's cycle, and this runs on the nginx thread.
pub unsafe fn start(
    cycle: *mut ngx_cycle_t,
    on_done: fn(CallId, WhoamiResult),
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ory-session")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Kratos client runtime: {e}"))?;
    let client = {
        let _guard = runtime.enter();
        kratos::build_client().map_err(|e| format!("cannot create the Kratos client: {e}"))?
    };

    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "eventfd() failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: cycle is valid in init_process; the connection is freed in `stop`.
    let connection = unsafe { ngx_get_connection(fd, (*cycle).log) };
    if connection.is_null() {
        // SAFETY: fd is ours and not registered anywhere.
        unsafe { libc::close(fd) };
        return Err("no free connection for the Kratos wake-up event".into());
    }
    // SAFETY: ngx_get_connection returned a connection with valid read/write events.
    unsafe {
        let rev = (*connection).read;
        (*rev).handler = Some(on_wakeup);
        (*rev).log = (*cycle).log;
        (*(*connection).write).log = (*cycle).log;
        if ngx_handle_read_event(rev, 0) != NGX_OK as isize {
            ngx_close_connection(connection);
            return Err("cannot add the Kratos wake-up event to the event loop".into());
        }
    }

    let mailbox = Arc::new(Mailbox {
        done: Mutex::new(Vec::new()),
        wakeup: fd,
    });
    BRIDGE.with(|b| {
        *b.borrow_mut() = Some(Bridge {
            runtime,
            client,
            mailbox,
            connection,
            on_done,
        })
    });
    Ok(())
}

/// Stops the runtime and closes the wake-up connection, so nginx does not report it as a
/// socket left open when the worker exits.
pub fn stop() {
    let Some(bridge) = BRIDGE.with(|b| b.borrow_mut().take()) else {
        return;
    };
    // Waits briefly for the runtime's threads, so that no task writes to the eventfd after
    // it is closed below. Calls still in flight are dropped: their requests are gone too.
    bridge.runtime.shutdown_timeout(Duration::from_millis(100));
    // SAFETY: the connection was made by `start` on this thread and is closed only here.
    unsafe { ngx_close_connection(bridge.connection) };
}

/// Starts one whoami call; its result comes back through `on_done` on the nginx thread.
/// Returns the handle that cancels it, or `None` when the bridge is not running.
pub fn spawn_whoami(
    id: CallId,
    credential: OwnedCredential,
    params: CallParams,
) -> Option<tokio::task::AbortHandle> {
    BRIDGE.with(|b| {
        let b = b.borrow();
        let bridge = b.as_ref()?;
        let client = bridge.client.clone();
        let mailbox = bridge.mailbox.clone();
        let task = bridge.runtime.spawn(async move {
            let result = kratos::whoami(&client, &params.url, &credential, params.timeout).await;
            mailbox.deliver(id, result);
        });
        Some(task.abort_handle())
    })
}

/// Read handler of the eventfd connection, on the nginx thread.
unsafe extern "C" fn on_wakeup(_ev: *mut ngx_event_t) {
    let batch = BRIDGE.with(|b| {
        let b = b.borrow();
        let bridge = b.as_ref()?;
        // Drain the counter before the queue: a result pushed after this read writes the
        // eventfd again and triggers another event, so no wake-up is lost.
        let mut counter: u64 = 0;
        // SAFETY: reading 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe { libc::read(bridge.mailbox.wakeup, (&raw mut counter).cast(), 8) };
        let done = std::mem::take(
            &mut *bridge
                .mailbox
                .done
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        Some((done, bridge.on_done))
    });
    let Some((done, on_done)) = batch else { return };
    // The borrow is released: `on_done` may start new calls. A panic must not unwind into
    // nginx; the requests of that call then end with their own timer (504).
    for (id, result) in done {
        let _ = catch_unwind(AssertUnwindSafe(|| on_done(id, result)));
    }
}
