//! The stop flag every task of a running member watches.

use tokio::sync::watch;

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
