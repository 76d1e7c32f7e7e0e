# Sourced by the other scripts: one place for the build settings, so that every cargo call
# sees the same values and nginx is not reconfigured and rebuilt between calls.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target}
# The vendored nginx's configure arguments live in .cargo/config.toml, where plain cargo
# commands read them too. Cargo reads that file only below the directory it runs in, so the
# value is exported here as well, for cargo commands run from elsewhere (--manifest-path).
NGX_CONFIGURE_ARGS=$(sed -n 's/^NGX_CONFIGURE_ARGS *= *"\(.*\)"$/\1/p' "$top/.cargo/config.toml")
[[ -n $NGX_CONFIGURE_ARGS ]] || { echo "no NGX_CONFIGURE_ARGS in $top/.cargo/config.toml" >&2; exit 1; }
export NGX_CONFIGURE_ARGS
profile=release

# Prints the path of the nginx binary built by the vendored nginx-sys.
vendored_nginx() {
    ls -t "$CARGO_TARGET_DIR"/$profile/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -1
}
module_so() {
    echo "$CARGO_TARGET_DIR/$profile/libngx_http_ory_session_module.so"
}

# For scripts/bench and scripts/hotpath: the loopback ports and nginx configurations they run
# with, and the credentials their requests carry.

# Prints N free loopback ports, all different (bound at once, then released).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# render_template PREFIX FILE: FILE with every @NAME@ replaced by $PREFIX_NAME; fails on a
# placeholder whose variable is not exported.
render_template() {
    P=$1 perl -pe 's/\@([A-Z_]+)\@/exists $ENV{"$ENV{P}_$1"} ? $ENV{"$ENV{P}_$1"} : die "unset placeholder $1\n"/ge' "$2"
}

# b64url N: N random bytes (a multiple of 3) as base64url, 4*N/3 characters.
b64url() { head -c "$1" /dev/urandom | base64 -w0 | tr '+/' '-_'; }

# The cookies a browser sends beside Kratos' session cookie, ending in "; ": an analytics
# cookie and Kratos' CSRF cookie (155 characters), random each call.
browser_cookies() {
    printf '_ga=GA1.1.%d.%d; csrf_token_%s=%s; ' "$((1000000000 + RANDOM * 32768 + RANDOM))" \
        "$(date +%s)" "$(head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n')" \
        "$(head -c 32 /dev/urandom | base64 -w0)"
}
