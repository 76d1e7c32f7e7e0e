//! What one verification costs, per algorithm, with aws-lc-rs on this machine (best of 25
//! rounds). Not run by default:
//!
//!     cargo test --release --lib -- --ignored --nocapture oauth2::bench

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::alg::Algorithm;
use super::fixtures;
use super::jwks::{KeySet, KidLookup};
use super::jwt::verify;

/// The fastest of 25 rounds of about 20 ms each: the machine is shared (other builds, other
/// tests), and a round another process interrupts only ever looks slower.
fn per_call(mut f: impl FnMut()) -> Duration {
    for _ in 0..20 {
        f();
    }
    (0..25)
        .map(|_| {
            let started = Instant::now();
            let mut n = 0u32;
            while started.elapsed() < Duration::from_millis(20) {
                f();
                n += 1;
            }
            started.elapsed() / n
        })
        .min()
        .unwrap()
}

#[test]
#[ignore = "micro-benchmark"]
fn verification_cost() {
    let keys = KeySet::parse(fixtures::JWKS.as_bytes()).unwrap();
    println!("{:<12} {:>12} {:>12}", "token", "verify()", "signature");
    for (name, alg, kid) in [
        ("RS256-4096", Algorithm::Rs256, "rsa-4096"),
        ("RS256-2048", Algorithm::Rs256, "rsa-2048"),
        ("RS512-2048", Algorithm::Rs512, "rsa-2048"),
        ("PS256-2048", Algorithm::Ps256, "rsa-2048"),
        ("PS256-3072", Algorithm::Ps256, "rsa-3072-ps"),
        ("ES256", Algorithm::Es256, "ec-p256"),
        ("ES384", Algorithm::Es384, "ec-p384"),
        ("EdDSA", Algorithm::EdDsa, "ed25519"),
    ] {
        let token = fixtures::token(name);
        let whole = per_call(|| {
            black_box(verify(black_box(&token), &keys).unwrap());
        });
        // The signature check alone: what header and claims parsing add is the difference.
        let KidLookup::Found(key) = keys.lookup(kid) else {
            panic!("{kid}");
        };
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .unwrap();
        let sig_only = per_call(|| {
            assert!(key.verify(alg, black_box(input.as_bytes()), black_box(&signature)));
        });
        println!(
            "{name:<12} {:>9.1} µs {:>9.1} µs",
            micros(whole),
            micros(sig_only)
        );
    }
    let bad = fixtures::token("unknown-kid");
    let refused = per_call(|| {
        black_box(verify(black_box(&bad), &keys).unwrap_err());
    });
    println!("{:<12} {:>9.1} µs", "unknown kid", micros(refused));
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
