//! Client threads. `awc` clients are not `Send`, so each thread runs its own actix system with its
//! own pools and connections, and the work is split by index. Threads meet at phase barriers (so
//! the swipes of every thread fire together); if one thread fails, the others stop at their next
//! barrier instead of waiting for it until the deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch, Barrier};
use tokio::time::Instant;

use super::error::LoadError;

/// Extra time given to threads to report after the run's deadline.
const REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What one client thread knows about the others.
#[derive(Clone)]
pub struct WorkerCtx {
    pub index: usize,
    pub count: usize,
    pub deadline: Instant,
    barrier: Arc<Barrier>,
    /// Set when any thread failed; wakes the others out of `sync`.
    abort: watch::Sender<bool>,
    /// Per phase name: how many threads voted "no" in `all_agree`.
    nays: Arc<Mutex<HashMap<String, usize>>>,
}

impl WorkerCtx {
    /// Waits until every thread reaches the same phase.
    pub async fn sync(&self, phase: &str) -> Result<(), LoadError> {
        let mut abort = self.abort.subscribe();
        if *abort.borrow() {
            return Err(LoadError::Aborted);
        }
        tokio::select! {
            _ = self.barrier.wait() => Ok(()),
            _ = abort.changed() => Err(LoadError::Aborted),
            _ = tokio::time::sleep_until(self.deadline) => {
                Err(LoadError::Timeout(format!("client threads did not all reach phase `{phase}` before the deadline")))
            }
        }
    }

    /// Waits for every thread at `phase` (a name used once) and tells whether all of them said `yes`.
    pub async fn all_agree(&self, phase: &str, yes: bool) -> Result<bool, LoadError> {
        if !yes {
            // A poisoned lock means another thread panicked: that thread's failure is reported.
            let mut nays = self.nays.lock().map_err(|_| LoadError::Aborted)?;
            *nays.entry(phase.to_string()).or_default() += 1;
        }
        self.sync(phase).await?;
        let nays = self.nays.lock().map_err(|_| LoadError::Aborted)?;
        Ok(nays.get(phase).copied().unwrap_or(0) == 0)
    }

    /// This thread's share of `0..n`.
    pub fn share(&self, n: usize) -> impl Iterator<Item = usize> {
        (self.index..n).step_by(self.count.max(1))
    }

    /// Whether item `i` of a split by `group` belongs to this thread.
    pub fn owns(&self, group: usize) -> bool {
        group % self.count.max(1) == self.index
    }
}

/// Runs `work` on `threads` threads and collects their results. Awaiting does not block the
/// calling thread, so a server in the caller's actix system keeps running.
pub async fn run<T, F, Fut>(threads: usize, deadline: Instant, work: F) -> Result<Vec<T>, LoadError>
where
    F: Fn(WorkerCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, LoadError>> + 'static,
    T: Send + 'static,
{
    let threads = threads.max(1);
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(threads));
    let (abort, _) = watch::channel(false);
    let nays = Arc::new(Mutex::new(HashMap::new()));
    let mut results = Vec::with_capacity(threads);
    for index in 0..threads {
        let ctx = WorkerCtx {
            index,
            count: threads,
            deadline,
            barrier: barrier.clone(),
            abort: abort.clone(),
            nays: nays.clone(),
        };
        let work = work.clone();
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new().name(format!("matchd-load-{index}")).spawn(move || {
            let abort = ctx.abort.clone();
            let system = actix_rt::System::new();
            let result = system.block_on(async move { tokio::time::timeout_at(ctx.deadline, work(ctx)).await });
            let result = result.unwrap_or_else(|_| Err(LoadError::Timeout("the run's deadline passed".into())));
            if result.is_err() {
                abort.send_replace(true);
            }
            let _ = tx.send(result);
        })?;
        results.push(rx);
    }
    let mut out = Vec::with_capacity(threads);
    let mut first_error = None;
    for (index, rx) in results.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline + REPORT_GRACE, rx).await {
            Ok(Ok(Ok(v))) => out.push(v),
            Ok(Ok(Err(e))) => {
                // Keep the root cause, not the "another thread failed" of the others.
                if first_error.is_none() || matches!(first_error, Some(LoadError::Aborted)) {
                    first_error = Some(e);
                }
            }
            Ok(Err(_)) => first_error = first_error.or(Some(LoadError::Worker(format!("thread {index} panicked")))),
            Err(_) => first_error = first_error.or(Some(LoadError::Timeout(format!("thread {index} did not report")))),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn threads_meet_at_barriers_and_return_in_order() {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let out = run(3, deadline, |ctx| async move {
            ctx.sync("start").await?;
            Ok(ctx.share(10).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert_eq!(out, vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
    }

    #[actix_rt::test]
    async fn threads_vote() {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let out = run(2, deadline, |ctx| async move {
            let all = ctx.all_agree("a", true).await?;
            let not_all = ctx.all_agree("b", ctx.index == 0).await?;
            Ok((all, not_all))
        })
        .await
        .unwrap();
        assert_eq!(out, vec![(true, false), (true, false)]);
    }

    #[actix_rt::test]
    async fn one_failing_thread_stops_the_others() {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let started = Instant::now();
        let err = run(2, deadline, |ctx| async move {
            if ctx.index == 1 {
                return Err(LoadError::Setup("planted".into()));
            }
            ctx.sync("never").await?;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("planted"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
