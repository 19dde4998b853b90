//! Why a run could not be carried out. Failed requests during a run are not errors: they are
//! recorded in the history and reported as violations.

/// A run that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid option: {0}")]
    Usage(String),
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("{0}")]
    Transport(String),
    #[error("the server does not implement {0}; this scenario cannot run against it")]
    NotImplemented(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("another client thread failed, so this one stopped")]
    Aborted,
    #[error("client thread failed: {0}")]
    Worker(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
