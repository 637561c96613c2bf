//! Rate limits (SRV-5), on by default: GCRA (governor) per caller and route class — reads,
//! writes, sign-ins — where the caller is the signed-in user, or the client's address for
//! sign-ins. An answer over the limit is 429 with `Retry-After`; every limited answer carries
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the full
//! burst is back).
//!
//! Sign-in also locks an account after too many wrong passwords in a row: while it is
//! locked, every attempt — the right password too — is answered 429, so guessing gains
//! nothing; a successful sign-in clears the count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn::Principal;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::ServerConfig;
use crate::problem::Problem;
use crate::routes::AppState;

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteClass {
    Read,
    Write,
    Login,
}

struct Class {
    limiter: DefaultKeyedRateLimiter<String, StateInformationMiddleware>,
    burst: u32,
    full_after: Duration,
}

/// What a limit said.
pub(crate) enum Decision {
    Allowed {
        limit: u32,
        remaining: u32,
        reset: Duration,
    },
    Refused {
        limit: u32,
        retry_after: Duration,
    },
    /// The class has no limit.
    Unlimited,
}

/// Keys kept before old ones are dropped (each is a few dozen bytes).
const PRUNE_ABOVE: usize = 10_000;

/// Every limit of a server.
pub(crate) struct Limits {
    read: Option<Class>,
    write: Option<Class>,
    login: Option<Class>,
    lockout_failures: u32,
    lockout: Duration,
    failures: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

fn class(per_minute: u32, burst: u32) -> Option<Class> {
    let per_minute = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::per_minute(per_minute).allow_burst(burst);
    Some(Class {
        limiter: DefaultKeyedRateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        burst: burst.get(),
        full_after: quota.burst_size_replenished_in(),
    })
}

impl Limits {
    pub(crate) fn new(config: &ServerConfig) -> Limits {
        Limits {
            read: class(config.rate_read_per_minute, config.rate_read_burst),
            write: class(config.rate_write_per_minute, config.rate_write_burst),
            login: class(config.rate_login_per_minute, config.rate_login_burst),
            lockout_failures: config.login_lockout_failures,
            lockout: Duration::from_secs(config.login_lockout_seconds),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Draws one request of `class` for `key`.
    pub(crate) fn check(&self, class: RouteClass, key: &str) -> Decision {
        let class = match class {
            RouteClass::Read => &self.read,
            RouteClass::Write => &self.write,
            RouteClass::Login => &self.login,
        };
        let Some(class) = class else { return Decision::Unlimited };
        if class.limiter.len() > PRUNE_ABOVE {
            class.limiter.retain_recent();
        }
        match class.limiter.check_key(&key.to_string()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let per_cell = class.full_after / class.burst;
                let reset = per_cell * (class.burst - remaining.min(class.burst));
                Decision::Allowed { limit: class.burst, remaining, reset }
            }
            Err(not_until) => Decision::Refused {
                limit: class.burst,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    /// How long `account` stays locked, if it is.
    pub(crate) fn locked(&self, account: &str) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let until = failures.get(account).and_then(|(_, until)| *until)?;
        until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    /// Counts a wrong password for `account`; locks it at the limit.
    pub(crate) fn failed(&self, account: &str) {
        if self.lockout_failures == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() > PRUNE_ABOVE {
            let now = Instant::now();
            failures.retain(|_, (_, until)| until.is_some_and(|u| u > now));
        }
        let entry = failures.entry(account.to_string()).or_insert((0, None));
        if entry.1.is_some_and(|until| until <= Instant::now()) {
            *entry = (0, None);
        }
        entry.0 += 1;
        if entry.0 >= self.lockout_failures {
            entry.1 = Some(Instant::now() + self.lockout);
            tracing::warn!(account, failures = entry.0, "account locked after repeated failed sign-ins");
        }
    }

    /// Clears `account`'s count after a successful sign-in.
    pub(crate) fn succeeded(&self, account: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(account);
    }
}

/// Whole seconds, rounded up (a client that waits that long is let in).
fn seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: u64) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

/// The 429 for a refusal, or `None` with the headers for an allowed request.
pub(crate) fn answer(decision: &Decision, headers: &mut HeaderMap) -> Option<Response> {
    match *decision {
        Decision::Unlimited => None,
        Decision::Allowed { limit, remaining, reset } => {
            set(headers, "ratelimit-limit", u64::from(limit));
            set(headers, "ratelimit-remaining", u64::from(remaining));
            set(headers, "ratelimit-reset", seconds(reset));
            None
        }
        Decision::Refused { limit, retry_after } => Some(too_many(limit, retry_after)),
    }
}

/// A 429 that says when to come back.
pub(crate) fn too_many(limit: u32, retry_after: Duration) -> Response {
    let wait = seconds(retry_after).max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; try again in {wait} s"),
    )
    .into_response();
    let headers = response.headers_mut();
    set(headers, "retry-after", wait);
    set(headers, "ratelimit-limit", u64::from(limit));
    set(headers, "ratelimit-remaining", 0);
    set(headers, "ratelimit-reset", wait);
    response
}

/// The client's address, when the server knows it (`serve` records it; in-process calls
/// have none).
pub(crate) fn client(request_extensions: &axum::http::Extensions) -> String {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |ConnectInfo(address)| address.ip().to_string())
}

/// Limits a signed-in request by its user and class.
pub(crate) async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let class =
        if matches!(*request.method(), Method::GET | Method::HEAD) { RouteClass::Read } else { RouteClass::Write };
    let key = match request.extensions().get::<Principal>() {
        Some(principal) => format!("user:{}", principal.user.id),
        None => format!("ip:{}", client(request.extensions())),
    };
    let decision = state.limits.check(class, &key);
    let mut headers = HeaderMap::new();
    if let Some(refused) = answer(&decision, &mut headers) {
        return refused;
    }
    let mut response = next.run(request).await;
    response.headers_mut().extend(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_let_through_and_then_refused_until_a_cell_is_back() {
        let config = ServerConfig { rate_write_per_minute: 1, rate_write_burst: 3, ..ServerConfig::default() };
        let limits = Limits::new(&config);
        let remaining: Vec<u32> = (0..3)
            .map(|_| match limits.check(RouteClass::Write, "a") {
                Decision::Allowed { remaining, .. } => remaining,
                _ => panic!("within the burst"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limits.check(RouteClass::Write, "a") {
            Decision::Refused { limit, retry_after } => {
                assert_eq!(limit, 3);
                assert!((59..=60).contains(&seconds(retry_after)), "{retry_after:?}");
            }
            _ => panic!("over the burst"),
        }
        assert!(matches!(limits.check(RouteClass::Write, "b"), Decision::Allowed { .. }), "another caller has its own");
        assert!(matches!(limits.check(RouteClass::Read, "a"), Decision::Allowed { .. }), "reads have their own budget");
        let off = Limits::new(&ServerConfig { rate_read_per_minute: 0, ..ServerConfig::default() });
        assert!(matches!(off.check(RouteClass::Read, "a"), Decision::Unlimited));
    }

    #[test]
    fn an_account_locks_after_its_failures_and_a_success_clears_the_count() {
        let config = ServerConfig { login_lockout_failures: 3, login_lockout_seconds: 600, ..ServerConfig::default() };
        let limits = Limits::new(&config);
        limits.failed("ana");
        limits.failed("ana");
        limits.succeeded("ana");
        limits.failed("ana");
        limits.failed("ana");
        assert!(limits.locked("ana").is_none(), "the count started again after the success");
        limits.failed("ana");
        let left = limits.locked("ana").expect("locked");
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600), "{left:?}");
        assert!(limits.locked("bob").is_none());
    }
}
