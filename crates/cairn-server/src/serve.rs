//! Running the API on a listener until shutdown: stop accepting, let requests in flight
//! finish within the drain deadline, then close the backend (the store's shutdown backup).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::backend::Backend;
use crate::config::ServerConfig;

/// Serves the API on `listener` until `shutdown` completes, then drains and closes
/// `backend`. Only loopback listeners are accepted (see [`ServerConfig::validate`]).
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    crate::config::loopback_only(local)?;
    let drain = Duration::from_millis(config.drain_timeout_ms);
    let draining = Arc::new(AtomicBool::new(false));
    let router = crate::app::build(Arc::clone(&backend), config, Arc::clone(&draining));
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    let flag = Arc::clone(&draining);
    let mut server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                flag.store(true, Ordering::SeqCst);
                let _ = signalled.send(true);
            })
            .await
    });
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
