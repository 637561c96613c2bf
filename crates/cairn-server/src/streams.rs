//! How many realtime streams may be open: per user and in all. A stream holds a connection,
//! a task and a subscription for as long as it lives, so the rate limits (which count
//! requests) do not bound them; this does. A stream over either limit is refused with 429
//! `too_many_streams` before anything is held for it; closing a stream frees its place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::config::ServerConfig;
use crate::problem::Problem;

/// The open streams of a server.
#[derive(Debug)]
pub(crate) struct Streams {
    per_user: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_user: HashMap<String, usize>,
}

/// One open stream's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    streams: Arc<Streams>,
    user: String,
}

impl Streams {
    pub(crate) fn new(config: &ServerConfig) -> Streams {
        Streams {
            per_user: config.realtime_max_streams_per_user,
            total: config.realtime_max_streams,
            open: Mutex::default(),
        }
    }

    /// A place for one more stream of `user_id`, unless a limit (0: none) is reached.
    pub(crate) fn open(self: &Arc<Self>, user_id: &str) -> Result<StreamPermit, Problem> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.by_user.get(user_id).copied().unwrap_or(0);
        let refused = |detail: String| Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", detail);
        if self.per_user > 0 && mine >= self.per_user {
            return Err(refused(format!(
                "a user may have {} realtime streams open at once; close one first (one WebSocket holds many subscriptions)",
                self.per_user
            )));
        }
        if self.total > 0 && open.total >= self.total {
            return Err(refused(format!(
                "the server holds its most realtime streams ({}); try again later",
                self.total
            )));
        }
        open.total += 1;
        *open.by_user.entry(user_id.to_string()).or_default() += 1;
        Ok(StreamPermit { streams: self.clone(), user: user_id.to_string() })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_user_and_in_all_and_freed_on_drop() {
        let config =
            ServerConfig { realtime_max_streams_per_user: 2, realtime_max_streams: 3, ..ServerConfig::default() };
        let streams = Arc::new(Streams::new(&config));
        let a1 = streams.open("a").expect("a1");
        let _a2 = streams.open("a").expect("a2");
        assert_eq!(streams.open("a").expect_err("a3").kind, "too_many_streams");
        let _b1 = streams.open("b").expect("b1");
        let err = streams.open("c").expect_err("over the total");
        assert!(err.detail.contains("most realtime streams"), "{}", err.detail);
        drop(a1);
        streams.open("c").expect("a place was freed");
        let unlimited = Arc::new(Streams::new(&ServerConfig {
            realtime_max_streams_per_user: 0,
            realtime_max_streams: 0,
            ..ServerConfig::default()
        }));
        let held: Vec<_> = (0..100).map(|_| unlimited.open("a").expect("no limit")).collect();
        assert_eq!(held.len(), 100);
    }
}
