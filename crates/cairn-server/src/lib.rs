//! cairn over HTTP: the REST API that `cairn serve` runs.
//!
//! The server parses, calls and formats; behaviour lives in the library. Handlers reach
//! storage only through the [`Backend`] trait (records, queries, history, changes, health),
//! implemented here by the embedded store ([`Embedded`]); no SQLite type crosses it, so a
//! PostgreSQL backend can stand behind the same routes later.
//!
//! - [`app`] builds the [`axum::Router`] with every layer, so tests call it in-process
//!   (`tower::ServiceExt::oneshot`) without a socket;
//! - [`serve`] runs it on a listener until a shutdown signal, drains in-flight requests
//!   within a deadline, then closes the backend (which takes the shutdown backup when the
//!   store's settings ask for one).
//!
//! Every error is `application/problem+json` (RFC 9457) with a stable `type` taken from
//! [`cairn::ErrorKind`] and the request id (see `problem.rs`). Every `/api` route but
//! sign-in needs a session or API key (`routes/auth.rs`); records are held to their
//! collection's rules (`cairn`'s access layer). The server listens on loopback only: it has no
//! TLS of its own, so remote clients reach it through a TLS-terminating proxy on the same host.

mod app;
mod backend;
pub mod client;
mod config;
mod console;
mod embedded;
mod limits;
mod metrics;
mod openapi;
mod problem;
mod routes;
mod serve;
mod stall;
mod stream;
mod streams;
mod tls;

pub use app::app;
pub use backend::{Backend, BackendFuture, JobAction, Readiness, RecordWrite};
pub use config::ServerConfig;
pub use embedded::Embedded;
pub use problem::Problem;
pub use serve::serve;
