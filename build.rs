//! Passes the nginx build facts found by `nginx-sys` (features, OS, version) to the compiler
//! as `cfg` values. Cargo only exposes a dependency's `links` metadata to direct dependents,
//! which is why `nginx-sys` is listed in Cargo.toml next to `ngx`.

use std::env;

fn main() {
    for (var, cfg) in [
        ("DEP_NGINX_FEATURES", "ngx_feature"),
        ("DEP_NGINX_OS", "ngx_os"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rerun-if-env-changed={var}_CHECK");
        let allowed = env::var(format!("{var}_CHECK")).unwrap_or_else(|_| "any()".into());
        println!("cargo::rustc-check-cfg=cfg({cfg}, values({allowed}))");
        if let Ok(values) = env::var(var) {
            for value in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                println!("cargo::rustc-cfg={cfg}=\"{value}\"");
            }
        }
    }
    // nginx 1.23.0 linked repeated request headers through `ngx_table_elt_t.next` and
    // replaced the `cookies` and `x_forwarded_for` arrays of `headers_in` with such chains.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    println!("cargo::rustc-check-cfg=cfg(ngx_header_chains)");
    let version = env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if version.is_none_or(|v| v >= 1_023_000) {
        println!("cargo::rustc-cfg=ngx_header_chains");
    }
}
