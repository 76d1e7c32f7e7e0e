# Sourced by the other scripts: one place for the build settings, so that every cargo call
# sees the same values and nginx is not reconfigured and rebuilt between calls.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target}
# auth_request is needed by the benchmark and the gateway recipes; --with-debug makes
# `error_log ... debug` work in tests.
export NGX_CONFIGURE_ARGS=${NGX_CONFIGURE_ARGS:-"--with-http_auth_request_module --with-debug"}
profile=release

# Prints the path of the nginx binary built by the vendored nginx-sys.
vendored_nginx() {
    ls -t "$CARGO_TARGET_DIR"/$profile/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -1
}
module_so() {
    echo "$CARGO_TARGET_DIR/$profile/libngx_http_ory_session_module.so"
}
