//! A process's resident memory and thread count (`/proc/<pid>/status`), open descriptors (`/proc/<pid>/fd`) and CPU time (`/proc/<pid>/task/*/schedstat`,
//! nanoseconds, all threads), Linux only.

use std::time::Duration;

use super::error::LoadError;

/// CPU time `pid`'s live threads have used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, LoadError> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir)
        .map_err(|e| LoadError::Setup(format!("cannot read {dir} (is --server-pid a running process here?): {e}")))?;
    let mut ns: u64 = 0;
    for task in tasks.flatten() {
        // A thread may exit between listing and reading: skip it.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += parse_schedstat(&text).unwrap_or(0);
        }
    }
    Ok(Duration::from_nanos(ns))
}

fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `VmRSS` of `pid`, in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64, LoadError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LoadError::Setup(format!("cannot read {path} (is --server-pid a running process here?): {e}")))?;
    parse_vm_rss(&text).ok_or_else(|| LoadError::Setup(format!("{path} has no VmRSS line")))
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Result<u64, LoadError> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| LoadError::Setup(format!("cannot read {dir} (is --server-pid a running process here?): {e}")))?;
    Ok(entries.count() as u64)
}

/// `Threads` of `pid` (its live threads).
pub fn threads(pid: u32) -> Result<u64, LoadError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LoadError::Setup(format!("cannot read {path} (is --server-pid a running process here?): {e}")))?;
    parse_threads(&text).ok_or_else(|| LoadError::Setup(format!("{path} has no Threads line")))
}

fn parse_threads(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.trim_start_matches("Threads:").trim().parse().ok()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_from_schedstat() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123456));
        // Only live threads count, and other tests' threads come and go meanwhile, so the total is
        // not monotonic here: check that it is read at all.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        assert!(x > 0 && cpu_time(std::process::id()).unwrap() > Duration::ZERO);
    }

    #[test]
    fn vm_rss_is_read_from_status_text() {
        assert_eq!(parse_vm_rss("Name:\tmatchd\nVmRSS:\t   12345 kB\nThreads: 4\n"), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn threads_are_read_from_status_text() {
        assert_eq!(parse_threads("Name:\tmatchd\nVmRSS:\t   12345 kB\nThreads:\t7\n"), Some(7));
        assert_eq!(parse_threads("Name:\tx\n"), None);
        assert!(threads(std::process::id()).unwrap() >= 1);
    }

    #[test]
    fn open_fds_counts_descriptors() {
        let before = open_fds(std::process::id()).unwrap();
        let extra: Vec<std::fs::File> = (0..5).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        // Other tests open and close files meanwhile, so only check that ours are counted at all.
        assert!(open_fds(std::process::id()).unwrap() >= 5 && before > 0);
        drop(extra);
    }
}
