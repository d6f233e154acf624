//! Recovering a release that a dead helm left `pending-install` / `pending-upgrade` /
//! `pending-rollback`.
//!
//! helm marks the new revision pending before it touches any object and marks it final when
//! done; a helm killed in between leaves the pending revision as the release's latest, and
//! every later install, upgrade or rollback is refused with "another operation
//! (install/upgrade/rollback) is in progress". The caller holds the release's cluster-wide
//! lease while recovering, so no live helm can own that revision: it is safe to act.
//!
//! Checked against helm 4.1: `helm rollback` is accepted while the latest revision is
//! pending (it reads the target revision and writes a new one; it does not look at the
//! latest one's state), and `helm uninstall` removes a `pending-install` release. So the
//! recovery is pure CLI and never edits helm's storage Secrets. The pending revision itself
//! stays in `helm history` with its pending state (helm does not rewrite it) until the
//! history limit prunes it; only the latest revision's state gates new operations.

use std::fmt;

use super::release::{HistoryEntry, ReleaseState};

/// What `Helm::recover_pending` did about a pending release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub release: String,
    pub namespace: String,
    /// The revision the dead helm left behind, and its state.
    pub pending_revision: u32,
    pub pending_state: ReleaseState,
    pub action: RecoveryAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryAction {
    /// `helm rollback` to `to_revision`, which became `new_revision` (now deployed).
    RolledBack { to_revision: u32, new_revision: u32 },
    /// Nothing earlier to return to: the release was uninstalled (the next install starts
    /// afresh at revision 1).
    Uninstalled,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "release {}/{} was left {} at revision {} by a helm that did not finish; ",
            self.namespace, self.release, self.pending_state, self.pending_revision
        )?;
        match &self.action {
            RecoveryAction::RolledBack {
                to_revision,
                new_revision,
            } => write!(
                f,
                "rolled back to revision {to_revision} (now revision {new_revision})"
            ),
            RecoveryAction::Uninstalled => f.write_str("uninstalled it"),
        }
    }
}

/// The step that recovers a pending release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoveryPlan {
    pub pending_revision: u32,
    pub pending_state: ReleaseState,
    pub step: RecoveryStep,
}

/// The one helm command that recovers a pending release; named apart from the steps of a
/// task's step journal, which it is not one of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecoveryStep {
    Rollback(u32),
    Uninstall,
}

/// Decides from the history (any order) what recovers a pending latest revision; `None` when
/// the latest revision is not pending (or there is none).
///
/// - Roll back to the newest earlier revision that was fully deployed (`deployed` or
///   `superseded`).
/// - A pending upgrade or rollback with no such revision (every earlier one failed) rolls
///   back to the newest earlier `failed` revision: that is what was running before the dead
///   helm started, and a rollback keeps the objects (uninstalling would delete them).
/// - A pending install with nothing deployed before is uninstalled: the release never existed
///   as far as anybody could rely on, and the caller's next install starts it afresh.
pub(crate) fn plan(history: &[HistoryEntry]) -> Option<RecoveryPlan> {
    let latest = history.iter().max_by_key(|e| e.revision)?;
    if !latest.status.is_pending() {
        return None;
    }
    let earlier = |pick: fn(&ReleaseState) -> bool| {
        history
            .iter()
            .filter(|e| e.revision < latest.revision && pick(&e.status))
            .map(|e| e.revision)
            .max()
    };
    let step = match earlier(ReleaseState::was_deployed) {
        Some(rev) => RecoveryStep::Rollback(rev),
        None if latest.status == ReleaseState::PendingInstall => RecoveryStep::Uninstall,
        None => match earlier(|s| *s == ReleaseState::Failed) {
            Some(rev) => RecoveryStep::Rollback(rev),
            None => RecoveryStep::Uninstall,
        },
    };
    Some(RecoveryPlan {
        pending_revision: latest.revision,
        pending_state: latest.status.clone(),
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u32, &str)]) -> Vec<HistoryEntry> {
        entries
            .iter()
            .map(|(revision, status)| HistoryEntry {
                revision: *revision,
                status: ReleaseState::parse(status),
                chart: "c-0.1.0".into(),
                app_version: String::new(),
                description: String::new(),
                updated: String::new(),
            })
            .collect()
    }

    fn step(entries: &[(u32, &str)]) -> Option<RecoveryStep> {
        plan(&h(entries)).map(|p| p.step)
    }

    #[test]
    fn nothing_to_do_unless_the_latest_is_pending() {
        assert_eq!(step(&[]), None);
        assert_eq!(step(&[(1, "deployed")]), None);
        assert_eq!(step(&[(1, "superseded"), (2, "failed")]), None);
        // An old pending revision left by an earlier recovery does not count.
        assert_eq!(
            step(&[(1, "superseded"), (2, "pending-upgrade"), (3, "deployed")]),
            None
        );
    }

    #[test]
    fn pending_upgrade_rolls_back_to_the_last_deployed() {
        assert_eq!(
            step(&[(1, "deployed"), (2, "pending-upgrade")]),
            Some(RecoveryStep::Rollback(1))
        );
        assert_eq!(
            step(&[
                (1, "superseded"),
                (2, "superseded"),
                (3, "failed"),
                (4, "pending-upgrade")
            ]),
            Some(RecoveryStep::Rollback(2))
        );
        // History in any order.
        let p = plan(&h(&[
            (5, "pending-rollback"),
            (3, "superseded"),
            (4, "failed"),
        ]))
        .unwrap();
        assert_eq!(p.pending_revision, 5);
        assert_eq!(p.pending_state, ReleaseState::PendingRollback);
        assert_eq!(p.step, RecoveryStep::Rollback(3));
        // Skips a stale pending revision from an earlier recovery.
        assert_eq!(
            step(&[
                (1, "superseded"),
                (2, "pending-upgrade"),
                (3, "deployed"),
                (4, "pending-upgrade")
            ]),
            Some(RecoveryStep::Rollback(3))
        );
    }

    #[test]
    fn pending_install_without_a_deployed_revision_uninstalls() {
        assert_eq!(
            step(&[(1, "pending-install")]),
            Some(RecoveryStep::Uninstall)
        );
        assert_eq!(
            step(&[(1, "uninstalled"), (2, "pending-install")]),
            Some(RecoveryStep::Uninstall)
        );
        assert_eq!(
            step(&[(1, "failed"), (2, "pending-install")]),
            Some(RecoveryStep::Uninstall)
        );
    }

    #[test]
    fn pending_upgrade_after_only_failures_rolls_back_to_the_last_failed() {
        assert_eq!(
            step(&[(1, "failed"), (2, "failed"), (3, "pending-upgrade")]),
            Some(RecoveryStep::Rollback(2))
        );
        // Pruned history with nothing before: uninstall.
        assert_eq!(
            step(&[(7, "pending-upgrade")]),
            Some(RecoveryStep::Uninstall)
        );
    }

    #[test]
    fn report_reads_well() {
        let r = Recovery {
            release: "rel".into(),
            namespace: "demo".into(),
            pending_revision: 2,
            pending_state: ReleaseState::PendingUpgrade,
            action: RecoveryAction::RolledBack {
                to_revision: 1,
                new_revision: 3,
            },
        };
        assert_eq!(
            r.to_string(),
            "release demo/rel was left pending-upgrade at revision 2 by a helm that did not finish; rolled back to revision 1 (now revision 3)"
        );
    }
}
