//! The audit as a background sweep in the server (`audit.interval_ms`, off by default): every
//! interval the node that leads (the lease holder; in a cluster the owner of slot 0, so one node
//! sweeps) reads a snapshot, audits it, confirms the findings with a second snapshot
//! `audit.confirm_ms` later, and reports each confirmed finding once: a warning in the log and
//! `matchd_audit_inconsistencies_total{kind}`. It never repairs (that is `matchd audit --repair`).
//!
//! It runs on its own thread, so reading and parsing a large snapshot never delays the lease
//! renewals or the actors.

use std::collections::HashSet;
use std::time::Duration;

use actix::Arbiter;

use super::reader::{audited, Reader};
use super::Inconsistency;
use crate::cluster::Membership;
use crate::config::Config;
use crate::metrics::METRICS;
use crate::persist::Lease;

/// Bound on one read of the sweep.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the sweep if `audit.interval_ms` is set (Redis mode).
pub fn start(config: &Config, lease: Option<Lease>, membership: Option<Membership>) -> Option<Arbiter> {
    let url = config.redis.clone()?;
    let settings = config.audit.clone();
    if settings.interval_ms == 0 {
        return None;
    }
    let arbiter = Arbiter::new();
    let leads = move || match (&lease, &membership) {
        (Some(lease), _) => lease.held(),
        (None, Some(m)) => m.owns(0),
        (None, None) => false,
    };
    arbiter.spawn(async move {
        let reader = match Reader::new(&url, READ_TIMEOUT) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the audit sweep cannot use Redis; it does not run");
                return;
            }
        };
        let interval = Duration::from_millis(settings.interval_ms);
        let confirm = Duration::from_millis(settings.confirm_ms);
        tracing::info!(interval_ms = settings.interval_ms, "audit sweep on");
        let mut reported: HashSet<String> = HashSet::new();
        loop {
            tokio::time::sleep(interval).await;
            if !leads() {
                continue;
            }
            match audited(&reader, Some(confirm), settings.outbox_max_age_ms).await {
                Ok((_, findings)) => {
                    let now: HashSet<String> = findings.iter().map(Inconsistency::identity).collect();
                    for f in findings.iter().filter(|f| !reported.contains(&f.identity())) {
                        METRICS.audit_inconsistencies.with_label_values(&[f.kind.as_str()]).inc();
                        tracing::warn!(
                            kind = f.kind.as_str(),
                            invariant = %f.invariant,
                            keys = ?f.keys,
                            users = ?f.users.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
                            ids = ?f.ids,
                            repairable = f.repair.is_some(),
                            "audit: {}",
                            f.detail
                        );
                    }
                    // A finding is counted once while it lasts; if it comes back later, again.
                    reported = now;
                }
                Err(e) => tracing::warn!(error = %e, "audit sweep could not read Redis; trying again next interval"),
            }
        }
    });
    Some(arbiter)
}
