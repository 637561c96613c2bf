//! Running the API on a listener (HTTP, or HTTPS with a certificate) until shutdown: stop
//! accepting, let requests in flight finish within the drain deadline, then close the backend
//! (the store's shutdown backup).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::backend::Backend;
use crate::config::ServerConfig;
use crate::stall::Guarded;

/// Serves the API on `listener` until `shutdown` completes, then drains and closes
/// `backend`: HTTPS when the config names a certificate and key (see [`ServerConfig::tls`]),
/// else HTTP on a loopback listener only (see [`ServerConfig::validate`]).
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
        _ => {
            crate::config::loopback_only(local)?;
            None
        }
    };
    let drain = Duration::from_millis(config.drain_timeout_ms);
    let stall = Duration::from_millis(config.send_stall_timeout_ms.max(1));
    let draining = Arc::new(tokio::sync::watch::Sender::new(false));
    let mut on_signal = draining.subscribe();
    let router = crate::app::build(Arc::clone(&backend), config, Arc::clone(&draining));
    let stop = async move {
        shutdown.await;
        draining.send_replace(true);
    };
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = match tls {
        // `tap_io` makes the peer's address the connection's info, as for plain TCP.
        Some(tls) => {
            let listener = Guarded::new(crate::tls::TlsListener::new(listener, tls)?, stall).tap_io(|_| ());
            tokio::spawn(async move { axum::serve(listener, service).with_graceful_shutdown(stop).await })
        }
        None => {
            let listener = Guarded::new(listener, stall).tap_io(|_| ());
            tokio::spawn(async move { axum::serve(listener, service).with_graceful_shutdown(stop).await })
        }
    };
    tracing::info!(%local, "serving");
    let deadline = async move {
        let _ = on_signal.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    let served = tokio::select! {
        joined = &mut server => joined.map_err(std::io::Error::other).and_then(|r| r),
        () = deadline => {
            tracing::warn!(seconds = drain.as_secs_f64(), "requests still in flight after the drain deadline; closing anyway");
            server.abort();
            Ok(())
        }
    };
    let closed = backend.close().await.map_err(|e| std::io::Error::other(e.to_string()));
    tracing::info!("stopped");
    served.and(closed)
}
