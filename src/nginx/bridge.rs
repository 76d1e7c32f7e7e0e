//! The per-worker runtime that makes every check's calls, and the way their results come
//! back to nginx.
//!
//! This is the only file where threads meet. The runtime's side never touches nginx memory:
//! a finished call pushes its delivery (the result and the function that takes it) onto a
//! mutex-guarded queue and writes to an eventfd. The eventfd is registered in nginx's event
//! loop as the read side of a connection, so deliveries run on the nginx thread, between
//! other events.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_get_connection,
    ngx_handle_read_event, NGX_OK,
};

use crate::check::client::{build_client, Client, Trust};
use crate::check::inflight::CallId;
use crate::check::table::Cancel;

impl Cancel for tokio::task::AbortHandle {
    fn cancel(&self) {
        self.abort();
    }
}

/// A finished call's result, bound to the function that takes it on the nginx thread.
type Delivery = Box<dyn FnOnce() + Send>;

/// State shared with the runtime's threads.
struct Mailbox {
    done: Mutex<Vec<Delivery>>,
    /// Owned by the nginx connection, which closes it in `stop` once the runtime is down.
    wakeup: RawFd,
}

impl Mailbox {
    fn deliver(&self, delivery: Delivery) {
        // A poisoned lock only means another task panicked while pushing; the Vec is intact.
        let was_empty = {
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            done.push(delivery);
            done.len() == 1
        };
        // Only the first delivery of a batch wakes nginx: the others find the queue
        // non-empty, so a wake-up is pending that has not taken the queue yet (`on_wakeup`
        // takes it under the same lock), and they go with it. Under load most calls end
        // while nginx is busy, and this saves their write system calls.
        if !was_empty {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to an eventfd we own. It can only fail
        // with EAGAIN when the counter is about to overflow, and then a wake-up is pending
        // anyway.
        unsafe { libc::write(self.wakeup, (&raw const one).cast(), 8) };
    }
}

struct Bridge {
    runtime: tokio::runtime::Runtime,
    /// One client per set of trusted certificates, by the index `conf` gave the set (0: the
    /// system's store).
    clients: Vec<Client>,
    mailbox: Arc<Mailbox>,
    connection: *mut ngx_connection_t,
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
pub unsafe fn start(cycle: *mut ngx_cycle_t, trusts: &[Trust]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ory-session")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    let clients = {
        let _guard = runtime.enter();
        trusts
            .iter()
            .map(build_client)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?
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
        return Err("no free connection for the client's wake-up event".into());
    }
    // SAFETY: ngx_get_connection returned a connection with valid read/write events.
    unsafe {
        let rev = (*connection).read;
        (*rev).handler = Some(on_wakeup);
        (*rev).log = (*cycle).log;
        (*(*connection).write).log = (*cycle).log;
        if ngx_handle_read_event(rev, 0) != NGX_OK as isize {
            ngx_close_connection(connection);
            return Err("cannot add the client's wake-up event to the event loop".into());
        }
    }

    let mailbox = Arc::new(Mailbox {
        done: Mutex::new(Vec::new()),
        wakeup: fd,
    });
    BRIDGE.with(|b| {
        *b.borrow_mut() = Some(Bridge {
            runtime,
            clients,
            mailbox,
            connection,
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

/// Starts call `id`: `call` gets the worker's HTTP client for the trusted certificates
/// `trust` names and makes the future that runs on the runtime. Its result comes back to
/// `on_done` on the nginx thread. Returns the handle that cancels the call, or `None` when
/// the runtime is not running.
pub fn spawn<F, R>(
    id: CallId,
    trust: usize,
    call: impl FnOnce(Client) -> F,
    on_done: fn(CallId, R),
) -> Option<tokio::task::AbortHandle>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    BRIDGE.with(|b| {
        let b = b.borrow();
        let bridge = b.as_ref()?;
        let future = call(bridge.clients.get(trust)?.clone());
        let mailbox = bridge.mailbox.clone();
        let task = bridge.runtime.spawn(async move {
            let result = future.await;
            mailbox.deliver(Box::new(move || on_done(id, result)));
        });
        Some(task.abort_handle())
    })
}

/// Read handler of the eventfd connection, on the nginx thread.
unsafe extern "C" fn on_wakeup(_ev: *mut ngx_event_t) {
    let done = BRIDGE.with(|b| {
        let b = b.borrow();
        let bridge = b.as_ref()?;
        // Drain the counter before taking the queue: a result pushed after the take finds
        // the queue empty and writes the eventfd again, which triggers another event, so no
        // wake-up is lost.
        let mut counter: u64 = 0;
        // SAFETY: reading 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe { libc::read(bridge.mailbox.wakeup, (&raw mut counter).cast(), 8) };
        let mut done = bridge
            .mailbox
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut *done))
    });
    // The borrow is released: a delivery may start new calls. A panic must not unwind into
    // nginx; the requests of that call then end with their own timer (504).
    for delivery in done.into_iter().flatten() {
        let _ = catch_unwind(AssertUnwindSafe(delivery));
    }
}
