# nginx with ngx_http_ory_session_module, the module built for the very nginx of the image.
#
#   docker build -t nginx-ory .                                       # official nginx:1.28.3
#   docker build --build-arg BASE=debian:bookworm-slim -t nginx-ory . # Debian's nginx 1.22.1
#   docker run -p 8080:80 -e KRATOS_URL=http://kratos:4433 -e UPSTREAM_URL=http://app:3000 nginx-ory
#
# Settings are read when the container starts: /etc/nginx/templates/default.conf.template
# becomes /etc/nginx/conf.d/default.conf with the environment variables below filled in.
# The README's "Installing" section has the details; scripts/image builds this with Podman.

# Any base with Debian's apt: nginx:1.28.3 (which has nginx) or debian:bookworm-slim (which
# gets Debian's nginx package). Both stages derive from it.
ARG BASE=nginx:1.28.3

# The base and its nginx: the build stage builds the module against this same binary.
FROM ${BASE} AS runtime
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN if ! command -v nginx >/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends nginx gettext-base; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi; \
    nginx -V

FROM runtime AS build
# Rust: Debian bookworm's rustc-web and cargo-web (its plain rustc is too old), or rustup where
# apt has no rustc-web (RUST=auto); RUST=debian or RUST=rustup chooses.
ARG RUST=auto
ARG RUST_VERSION=1.88.0
ENV PATH=/root/.cargo/bin:$PATH
# Inherited from the runtime stage; said again after the ARGs, where hadolint looks for it.
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
WORKDIR /tmp
RUN apt-get update; \
    apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
        libpcre2-dev libclang-dev clang ca-certificates curl; \
    # Trust certificates given to the build in /usr/local/share/ca-certificates (a proxy's).
    update-ca-certificates; \
    if [[ $RUST == auto ]]; then \
        if apt-cache show rustc-web >/dev/null 2>&1; then RUST=debian; else RUST=rustup; fi; \
    fi; \
    if [[ $RUST == debian ]]; then \
        apt-get install -y --no-install-recommends rustc-web cargo-web; \
    else \
        url="https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"; \
        curl -fsSLo /tmp/rustup-init "$url"; \
        echo "$(curl -fsSL "$url.sha256" | cut -d' ' -f1)  /tmp/rustup-init" | sha256sum -c -; \
        chmod +x /tmp/rustup-init; \
        /tmp/rustup-init -y -q --no-modify-path --profile minimal --default-toolchain "$RUST_VERSION"; \
        rm /tmp/rustup-init; \
    fi; \
    rustc --version; \
    # Debian's nginx was built from Debian's patched sources, which its nginx-dev package ships.
    # The package is only unpacked: installing it would pull in the build dependencies of every
    # Debian nginx module. Other nginx builds (the official image) use the nginx source bundled
    # with the ngx crate.
    version=$(dpkg-query -W -f='${Version}' nginx 2>/dev/null || true); \
    if [[ -n $version ]] && apt-get download "nginx-dev=$version" 2>/dev/null; then \
        dpkg-deb -x nginx-dev_*.deb /tmp/nginx-dev; \
        mkdir -p /usr/share/nginx; \
        mv /tmp/nginx-dev/usr/share/nginx/src /usr/share/nginx/src; \
        rm -rf /tmp/nginx-dev nginx-dev_*.deb; \
    fi

WORKDIR /src
# Only what the build reads: a change to the tests or the documentation reuses the cached build.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src/ src/
COPY scripts/build-for-nginx scripts/
# Without its debug line tables the module is 6 MB instead of 34.
RUN scripts/build-for-nginx "$(command -v nginx)" --install-to /out; \
    strip --strip-debug /out/ngx_http_ory_session_module.so

FROM runtime
COPY --from=build /out/ngx_http_ory_session_module.so /usr/lib/nginx/modules/
COPY image/nginx.conf /etc/nginx/nginx.conf
COPY image/templates/ /etc/nginx/templates/
COPY image/entrypoint /usr/local/bin/nginx-ory-entrypoint
# The base's own welcome server would take the port; nginx -t proves that nginx loads the module.
RUN rm -f /etc/nginx/conf.d/default.conf /etc/nginx/sites-enabled/default; \
    nginx -t

ENV KRATOS_URL=http://127.0.0.1:4433 \
    UPSTREAM_URL=http://127.0.0.1:8080 \
    NGINX_PORT=80 \
    ORY_SESSION_COOKIE=ory_kratos_session \
    ORY_SESSION_TIMEOUT=5s \
    ORY_SESSION_CACHE_TTL=60s
EXPOSE 80
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/nginx-ory-entrypoint"]
CMD ["nginx", "-g", "daemon off;"]
