//! How the server runs. Every field has a documented default; unknown keys are refused.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen. Default: `127.0.0.1:8080`. Only loopback addresses are accepted: the
    /// server has no TLS, so remote clients come through a TLS-terminating proxy.
    pub listen: SocketAddr,
    /// The largest request body, in bytes. Default: 2 MiB (twice the default record limit,
    /// for JSON's escaping).
    pub max_body_bytes: usize,
    /// How long a request may run before it is answered 408. Default: 30,000 ms.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for requests in flight before it stops waiting. Default:
    /// 10,000 ms.
    pub drain_timeout_ms: u64,
    /// `/ready` fails when fewer bytes than this are free on the store's disk. Default: 64 MiB.
    pub ready_min_free_bytes: u64,
    /// `/ready` fails when the newest verified backup is older than this (0: not checked).
    /// Default: 0.
    pub ready_max_backup_age_seconds: u64,
    /// Reads (GET) a signed-in user may make per minute, on average (0: no limit). Default: 1,200.
    pub rate_read_per_minute: u32,
    /// Reads let through at once before the rate applies. Default: 200.
    pub rate_read_burst: u32,
    /// Writes a signed-in user may make per minute (0: no limit). Default: 300.
    pub rate_write_per_minute: u32,
    /// Writes let through at once. Default: 60.
    pub rate_write_burst: u32,
    /// Sign-in attempts per client address per minute (0: no limit). Default: 10.
    pub rate_login_per_minute: u32,
    /// Sign-in attempts let through at once. Default: 5.
    pub rate_login_burst: u32,
    /// Wrong passwords in a row that lock an account (0: never). Default: 5.
    pub login_lockout_failures: u32,
    /// How long a locked account refuses every sign-in. Default: 900 s.
    pub login_lockout_seconds: u64,
    /// How long an idempotency key is remembered. Default: 86,400 s (24 hours).
    pub idempotency_retention_seconds: u64,
    /// Where the JSON log files go, rotated daily (`cairn.<date>.log`); none: stderr.
    pub log_dir: Option<std::path::PathBuf>,
    /// How many daily log files are kept; older ones are removed. Default: 14.
    pub log_keep_files: usize,
    /// Origins a browser may call the API from (`https://app.example.org`); none by default,
    /// which answers no CORS request.
    pub cors_origins: Vec<String>,
    /// The certificate chain (PEM) to serve HTTPS with; with `tls_key_file`. Without TLS the
    /// server listens on loopback addresses only.
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// How often an idle realtime stream gets a heartbeat (which also carries how far it has
    /// been judged) and its token is checked again. Default: 15,000 ms.
    pub realtime_heartbeat_ms: u64,
    /// How long a stream ticket (`POST /api/realtime/tickets`) stays good. Default: 30 s.
    pub realtime_ticket_seconds: u64,
    /// The most subscriptions one WebSocket may hold. Default: 32.
    pub realtime_max_subscriptions: usize,
    /// The most realtime streams (SSE or WebSocket) one user may have open (0: no limit).
    /// Default: 32.
    pub realtime_max_streams_per_user: usize,
    /// The most realtime streams open in all (0: no limit). Default: 10,000.
    pub realtime_max_streams: usize,
    /// Events held per realtime subscriber before it catches up from the change log instead.
    /// Default: 256.
    pub realtime_buffer: usize,
    /// How long a client is told to wait before reconnecting after a shutdown. Default:
    /// 2,000 ms.
    pub realtime_retry_ms: u64,
    /// A connection whose writes make no progress for this long (a client that stopped
    /// reading: a stalled stream) is closed. Default: 30,000 ms.
    pub send_stall_timeout_ms: u64,
    /// Where the web console is served (its page at `<path>/`); empty: no console.
    /// Default: `/console`.
    pub console_path: String,
    /// The jobs this server runs (`[jobs]`: workers, schedules, commands, watched folders;
    /// docs/jobs.md). Default: two workers, the scheduler and the built-in maintenance
    /// schedules; no commands and no watched folders.
    pub jobs: cairn::JobsConfig,
}

impl ServerConfig {
    /// Refuses settings the server cannot run with: a listen address other machines could
    /// reach without TLS (tokens would cross the network in the clear), half a TLS setting,
    /// or a CORS origin that is not one.
    pub fn validate(&self) -> std::io::Result<()> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "tls_cert_file and tls_key_file go together: give both, or neither",
            ));
        }
        if !self.tls() {
            loopback_only(self.listen)?;
        }
        for origin in &self.cors_origins {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.trim_end_matches('/').contains(['*', ' '])
                && axum::http::HeaderValue::from_str(origin).is_ok();
            if !ok {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("cors_origins: {origin:?} is not an origin (scheme://host[:port], no wildcard)"),
                ));
            }
        }
        let console = &self.console_path;
        let reserved = ["/api", "/health", "/ready", "/metrics"].iter().any(|p| console.trim_end_matches('/') == *p);
        let plain = console.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
        if !console.is_empty()
            && (!console.starts_with('/')
                || console.trim_end_matches('/').is_empty()
                || reserved
                || !plain
                || console.contains('{'))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("console_path: {console:?} must be a path like /console (not / nor an API path), or empty"),
            ));
        }
        self.jobs.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(())
    }

    /// These settings with the environment's `CAIRN_<SETTING>` variables laid over them
    /// (`CAIRN_LISTEN=127.0.0.1:9000`, `CAIRN_RATE_WRITE_PER_MINUTE=0`,
    /// `CAIRN_CORS_ORIGINS=https://a.example,https://b.example`). Variables that name no
    /// setting are left alone; a value a setting cannot take is an error naming both.
    pub fn with_env(self, vars: impl IntoIterator<Item = (String, String)>) -> Result<ServerConfig, String> {
        let mut table = match serde_json::to_value(&self) {
            Ok(serde_json::Value::Object(table)) => table,
            _ => return Err("the settings cannot be read as a table".into()),
        };
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("CAIRN_").map(str::to_ascii_lowercase) else { continue };
            // A table (`[jobs]`) is set in the file, not by one variable.
            let Some(current) = table.get(&key).filter(|v| !v.is_object()) else { continue };
            let parsed = match current {
                serde_json::Value::Number(_) => value.trim().parse::<u64>().map(serde_json::Value::from).ok(),
                serde_json::Value::Array(_) => Some(serde_json::Value::from(
                    value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect::<Vec<_>>(),
                )),
                _ => Some(serde_json::Value::String(value.clone())),
            };
            let parsed = parsed.ok_or_else(|| format!("{name}={value:?} is not a whole number"))?;
            table.insert(key, parsed);
        }
        serde_json::from_value(serde_json::Value::Object(table)).map_err(|e| format!("the environment's settings: {e}"))
    }
}

impl ServerConfig {
    /// Whether the server speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }
}

/// Refuses an address other machines could reach: without TLS, tokens would cross the
/// network in the clear.
pub(crate) fn loopback_only(address: std::net::SocketAddr) -> std::io::Result<()> {
    if address.ip().is_loopback() {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("refusing to listen on {address} without TLS: tokens would cross the network in the clear; set tls_cert_file and tls_key_file, or listen on loopback behind a TLS-terminating proxy"),
    ))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 2 << 20,
            request_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
            ready_min_free_bytes: 64 << 20,
            ready_max_backup_age_seconds: 0,
            rate_read_per_minute: 1_200,
            rate_read_burst: 200,
            rate_write_per_minute: 300,
            rate_write_burst: 60,
            rate_login_per_minute: 10,
            rate_login_burst: 5,
            login_lockout_failures: 5,
            login_lockout_seconds: 900,
            idempotency_retention_seconds: 86_400,
            cors_origins: Vec::new(),
            log_dir: None,
            log_keep_files: 14,
            tls_cert_file: None,
            tls_key_file: None,
            realtime_heartbeat_ms: 15_000,
            realtime_ticket_seconds: 30,
            realtime_max_subscriptions: 32,
            realtime_max_streams_per_user: 32,
            realtime_max_streams: 10_000,
            realtime_buffer: 256,
            realtime_retry_ms: 2_000,
            send_stall_timeout_ms: 30_000,
            console_path: "/console".into(),
            jobs: cairn::JobsConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    #[test]
    fn the_environment_overrides_the_file_and_bad_values_are_named() {
        let vars =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let config = ServerConfig::default()
            .with_env(vars(&[
                ("CAIRN_LISTEN", "127.0.0.1:9000"),
                ("CAIRN_RATE_WRITE_PER_MINUTE", "7"),
                ("CAIRN_CORS_ORIGINS", "https://a.example, https://b.example:8443"),
                ("CAIRN_DIR", "/somewhere"),
                ("PATH", "/bin"),
            ]))
            .expect("config");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.rate_write_per_minute, 7);
        assert_eq!(config.cors_origins, ["https://a.example", "https://b.example:8443"]);
        assert!(config.validate().is_ok());
        let err =
            ServerConfig::default().with_env(vars(&[("CAIRN_RATE_READ_BURST", "lots")])).expect_err("not a number");
        assert!(err.contains("CAIRN_RATE_READ_BURST"), "{err}");
        let err = ServerConfig::default().with_env(vars(&[("CAIRN_LISTEN", "nowhere")])).expect_err("not an address");
        assert!(err.contains("settings"), "{err}");
        for origin in ["*", "https://*.example", "example.org", "https://a b"] {
            let config = ServerConfig { cors_origins: vec![origin.into()], ..ServerConfig::default() };
            assert!(config.validate().is_err(), "{origin}");
        }
    }

    #[test]
    fn other_machines_are_served_only_over_tls() {
        let remote: std::net::SocketAddr = "0.0.0.0:8443".parse().expect("address");
        let plain = ServerConfig { listen: remote, ..ServerConfig::default() };
        assert_eq!(plain.validate().expect_err("no TLS").kind(), std::io::ErrorKind::PermissionDenied);
        let tls = ServerConfig {
            listen: remote,
            tls_cert_file: Some("cert.pem".into()),
            tls_key_file: Some("key.pem".into()),
            ..ServerConfig::default()
        };
        assert!(tls.validate().is_ok());
        let half = ServerConfig { tls_key_file: None, ..tls };
        assert_eq!(half.validate().expect_err("half").kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn only_loopback_addresses_are_served() {
        for ok in ["127.0.0.1:8080", "[::1]:0"] {
            assert!(super::loopback_only(ok.parse().expect("address")).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:8080", "192.168.1.10:80", "[::]:0"] {
            let err = super::loopback_only(refused.parse().expect("address")).expect_err(refused);
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        }
    }
}
