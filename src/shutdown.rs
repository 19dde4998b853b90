//! Process signals that begin a graceful shutdown.

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // SIGTERM: what orchestrators and `kill` send to ask for a clean stop.
        let term = signal(SignalKind::terminate());
        // SIGINT: Ctrl-C in a terminal.
        let int = tokio::signal::ctrl_c();
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int => {}
                }
            }
            Err(_) => {
                let _ = int.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
