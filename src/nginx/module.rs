//! Module registration: the module table, its configuration hooks and worker start/stop.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_cycle_t, ngx_http_handler_pt, ngx_http_module_t,
    ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_int_t,
    ngx_module_t, ngx_process, NGX_ERROR, NGX_HTTP_MODULE, NGX_LOG_EMERG, NGX_OK,
    NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;

use super::{access, bridge, conf, logout, oauth2, permission, session, status, variables, zone};

pub struct HttpOrySessionModule;

impl HttpModule for HttpOrySessionModule {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module table is only mutated by nginx while loading the module.
        unsafe { &*ptr::addr_of!(ngx_http_ory_session_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        match variables::register(cf) {
            Ok(()) => NGX_OK as ngx_int_t,
            Err(()) => NGX_ERROR as ngx_int_t,
        }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
            return NGX_ERROR as ngx_int_t;
        };
        // `ory_cache` in the http block itself: no merge resolves it.
        if let (Some(main), Some(lcf)) = (
            HttpOrySessionModule::main_conf(&*cf),
            HttpOrySessionModule::location_conf_mut(&*cf),
        ) {
            if let Err(problem) = lcf.resolve_cache(main) {
                ngx_log_error!(NGX_LOG_EMERG, (*cf).log, "{}", problem);
                return NGX_ERROR as ngx_int_t;
            }
        }
        let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize];
        let h = ngx_array_push(&mut phase.handlers).cast::<ngx_http_handler_pt>();
        if h.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        *h = Some(access::access_handler);
        let logout_somewhere =
            HttpOrySessionModule::main_conf(&*cf).is_some_and(|m| m.logout_somewhere);
        if logout_somewhere {
            let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize];
            let h = ngx_array_push(&mut phase.handlers).cast::<ngx_http_handler_pt>();
            if h.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            *h = Some(logout::precontent_handler);
            logout::install_filter();
        }
        match status::add_zone(cf) {
            Ok(()) => NGX_OK as ngx_int_t,
            Err(()) => NGX_ERROR as ngx_int_t,
        }
    }
}

// SAFETY: MainConf is the type create_main_conf allocates for this module.
unsafe impl HttpModuleMainConf for HttpOrySessionModule {
    type MainConf = conf::MainConf;
}

// SAFETY: LocConf is the type create_loc_conf allocates for this module.
unsafe impl HttpModuleLocationConf for HttpOrySessionModule {
    type LocationConf = conf::LocConf;
}

/// Starts the client runtime of a worker. Never at configuration time: `nginx -t`, the
/// master and every reload load this module too, and a runtime's threads would not survive
/// the fork into workers.
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    if ngx_process != NGX_PROCESS_WORKER as usize && ngx_process != NGX_PROCESS_SINGLE as usize {
        return NGX_OK as ngx_int_t;
    }
    let Some(mcf) = HttpOrySessionModule::main_conf(&*cycle) else {
        return NGX_OK as ngx_int_t; // no http block
    };
    if !mcf.enabled_somewhere {
        return NGX_OK as ngx_int_t;
    }
    let trusts: Vec<_> = mcf.trusts.iter().map(|(_, trust)| trust.clone()).collect();
    if let Err(err) = bridge::start(cycle, &trusts) {
        // Keep the worker: it serves everything else, and protected locations fail closed
        // with 500 and a log line saying why.
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cycle).log,
            "ory_session: {}, sessions cannot be checked",
            err
        );
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: the worker's cycle has initialized its zones before forking it.
    let zones = unsafe { zone::attach(mcf) };
    session::init_worker(
        mcf.cache_size as usize,
        mcf.max_pending as usize,
        mcf.max_timeout as u64,
        &zones,
    );
    oauth2::init_worker(
        cycle,
        mcf.oauth2_cache_size as usize,
        mcf.max_pending as usize,
        mcf.max_oauth2_timeout as u64,
        &mcf.jwks,
        &zones,
    );
    permission::init_worker(
        mcf.permission_cache_size as usize,
        mcf.max_pending as usize,
        mcf.max_permission_timeout as u64,
        &zones,
    );
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    session::shutdown_worker();
    zone::detach(cycle);
    oauth2::shutdown_worker();
    permission::shutdown_worker();
    bridge::stop();
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(HttpOrySessionModule::preconfiguration),
    postconfiguration: Some(HttpOrySessionModule::postconfiguration),
    create_main_conf: Some(conf::create_main_conf),
    init_main_conf: Some(conf::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(conf::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

ngx::ngx_modules!(ngx_http_ory_session_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_ory_session_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(MODULE_CTX) as *mut c_void,
    commands: ptr::addr_of_mut!(conf::COMMANDS) as *mut _,
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};
