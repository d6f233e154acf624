//! Fault injection: latency, random 5xx/429 answers and forced 409 Conflicts, so tests can
//! check that clients (and the product) cope with a slow, flaky or contended API server.
//!
//! Random faults come from a seeded xorshift generator rather than the OS, so a failing test
//! replays the same sequence of faults when rerun with the same requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::status::ApiError;

/// Message carried by every injected error, so tests (and humans reading client output) can
/// tell injected faults from real ones.
pub const INJECTED: &str = "kube-sim: injected fault";

/// Forces `409 Conflict` on the next `remaining` writes whose path contains `path_contains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRule {
    pub path_contains: String,
    pub remaining: u32,
}

/// The fault knobs. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Added before each matching request is handled.
    pub latency: Duration,
    /// Only requests whose path contains this get the latency; `None` means all.
    pub latency_path: Option<String>,
    /// Probability (0.0–1.0) of answering 500 or 503 (chosen at random) with a Status body.
    pub error_rate: f64,
    /// Probability (0.0–1.0) of answering 429 with `Retry-After: 1`.
    pub throttle_rate: f64,
    /// Only requests whose path contains this are subject to `error_rate` and
    /// `throttle_rate`; `None` means all.
    pub error_path: Option<String>,
    /// Seed of the generator behind the rates; the generator restarts from it whenever the
    /// configuration is set.
    pub seed: u64,
    /// Checked in order; the first rule with `remaining > 0` that matches a write applies.
    pub conflicts: Vec<ConflictRule>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            latency_path: None,
            error_rate: 0.0,
            throttle_rate: 0.0,
            error_path: None,
            seed: 0x5eed,
            conflicts: Vec::new(),
        }
    }
}

/// xorshift64*: tiny, deterministic, good enough to pick which requests fail.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point; any other constant works.
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    /// Answer with this instead of handling the request.
    pub reject: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// 500, 503, or 409: a Status body.
    Error(ApiError),
    /// 429 with `Retry-After: 1`.
    Throttle(ApiError),
}

#[derive(Debug)]
struct State {
    config: FaultConfig,
    rng: XorShift,
}

/// Shared, runtime-changeable fault settings (cheap to clone; clones share state).
#[derive(Debug, Clone)]
pub struct Faults(Arc<Mutex<State>>);

impl Default for Faults {
    fn default() -> Self {
        Self::new(FaultConfig::default())
    }
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        let rng = XorShift::new(config.seed);
        Self(Arc::new(Mutex::new(State { config, rng })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the configuration and restarts the generator from its seed.
    pub fn set(&self, config: FaultConfig) {
        let mut s = self.lock();
        s.rng = XorShift::new(config.seed);
        s.config = config;
    }

    /// Changes part of the configuration in place (the generator keeps its position).
    pub fn update(&self, f: impl FnOnce(&mut FaultConfig)) {
        f(&mut self.lock().config);
    }

    /// The current configuration, including what is left of the conflict rules.
    pub fn get(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    /// Decides the fate of one request and consumes what it uses (random draws, conflict
    /// budget). `resource` and `name` only shape the Conflict message.
    pub fn decide(&self, method: &str, path: &str, resource: &str, name: &str) -> Decision {
        let mut s = self.lock();
        let State { config, rng } = &mut *s;
        let matches = |filter: &Option<String>| filter.as_deref().is_none_or(|f| path.contains(f));
        let delay = if matches(&config.latency_path) {
            config.latency
        } else {
            Duration::ZERO
        };
        let mut reject = None;
        if matches(&config.error_path) {
            // Draw only for active knobs so that enabling one doesn't shift the other's
            // sequence.
            if config.throttle_rate > 0.0 && rng.next_f64() < config.throttle_rate {
                reject = Some(Rejection::Throttle(ApiError::too_many_requests(format!(
                    "{INJECTED}: too many requests, please try again later"
                ))));
            } else if config.error_rate > 0.0 && rng.next_f64() < config.error_rate {
                let e = if rng.next_u64() & 1 == 0 {
                    ApiError::internal_error(format!("{INJECTED}: internal error"))
                } else {
                    ApiError::service_unavailable(format!("{INJECTED}: service unavailable"))
                };
                reject = Some(Rejection::Error(e));
            }
        }
        let write = matches!(method, "POST" | "PUT" | "PATCH" | "DELETE");
        if reject.is_none() && write {
            if let Some(rule) = config
                .conflicts
                .iter_mut()
                .find(|r| r.remaining > 0 && path.contains(&r.path_contains))
            {
                rule.remaining -= 1;
                reject = Some(Rejection::Error(ApiError::conflict(
                    resource,
                    "",
                    name,
                    &format!("{INJECTED}: the object has been modified; please apply your changes to the latest version and try again"),
                )));
            }
        }
        Decision { delay, reject }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_rejections(faults: &Faults, n: usize) -> Vec<bool> {
        (0..n)
            .map(|_| {
                faults
                    .decide("GET", "/api/v1/pods", "pods", "")
                    .reject
                    .is_some()
            })
            .collect()
    }

    #[test]
    fn rates_are_deterministic_and_roughly_honoured() {
        let config = FaultConfig {
            error_rate: 0.3,
            seed: 42,
            ..FaultConfig::default()
        };
        let a = Faults::new(config.clone());
        let first = count_rejections(&a, 1000);
        a.set(config);
        assert_eq!(first, count_rejections(&a, 1000), "same seed, same faults");
        let hits = first.iter().filter(|r| **r).count();
        assert!((200..400).contains(&hits), "{hits} of 1000 at rate 0.3");
    }

    #[test]
    fn path_filter_and_conflict_budget() {
        let faults = Faults::new(FaultConfig {
            error_rate: 1.0,
            error_path: Some("/configmaps".into()),
            conflicts: vec![ConflictRule {
                path_contains: "/secrets/s".into(),
                remaining: 2,
            }],
            ..FaultConfig::default()
        });
        assert!(faults
            .decide("GET", "/api/v1/pods", "pods", "")
            .reject
            .is_none());
        assert!(faults
            .decide("GET", "/api/v1/configmaps", "configmaps", "")
            .reject
            .is_some());
        let secret = "/api/v1/namespaces/d/secrets/s";
        // Reads don't consume the conflict budget.
        assert!(faults
            .decide("GET", secret, "secrets", "s")
            .reject
            .is_none());
        for _ in 0..2 {
            let d = faults.decide("PUT", secret, "secrets", "s");
            assert!(matches!(d.reject, Some(Rejection::Error(ref e)) if e.code == 409));
        }
        assert!(faults
            .decide("PUT", secret, "secrets", "s")
            .reject
            .is_none());
        assert_eq!(faults.get().conflicts[0].remaining, 0);
    }
}
