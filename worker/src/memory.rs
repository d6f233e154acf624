//! The pod's memory: how many helm processes fit in it.
//!
//! A pod's memory limit covers the worker *and* the helm processes it starts, and helm is
//! most of it: one helm is about 60 MiB resident with the example chart — some 44 MiB of
//! that helm's own code, the rest its Go heap — against about 20 MiB for the worker
//! (BENCHMARKS.md, "Memory of the pod"). So the worker runs no more helm processes at once
//! than its memory budget holds: `--memory-budget`, else the limit of its cgroup, else no
//! bound but `--concurrency`.
//!
//! Each helm is counted at its whole resident size: its Go memory, which `GOMEMLIMIT`
//! (`--helm-memory-limit`) keeps near the limit, plus helm's code ([`HELM_CODE`]). The
//! helm processes share that code and the kernel charges it to the pod once, so the count
//! errs on the safe side by the code of every helm but one; the worker itself is counted
//! at [`WORKER_RESERVE`].

use std::path::Path;

/// What the budget keeps for the worker itself: it peaked at 21 MiB deploying the example
/// chart four at a time and 31 MiB with a chart of 200 ConfigMaps (BENCHMARKS.md).
pub const WORKER_RESERVE: u64 = 48 << 20;

/// helm's code and read-only data, resident in every helm process (file-backed, about
/// 44 MiB of Helm 4.1's 60 MiB binary).
pub const HELM_CODE: u64 = 48 << 20;

/// Where the budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    /// `--memory-budget` / `MEMORY_BUDGET` (the chart sets it to the container's limit).
    Setting,
    /// The memory limit of the worker's cgroup.
    Cgroup,
}

impl BudgetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetSource::Setting => "--memory-budget",
            BudgetSource::Cgroup => "cgroup memory limit",
        }
    }
}

/// The memory the worker and its helm processes may use together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: BudgetSource,
}

impl Budget {
    /// The setting when given, else the cgroup's limit; `None` when neither says.
    pub fn find(setting: Option<u64>) -> Option<Budget> {
        match setting {
            Some(bytes) => Some(Budget {
                bytes,
                source: BudgetSource::Setting,
            }),
            None => cgroup_limit(Path::new("/sys/fs/cgroup")).map(|bytes| Budget {
                bytes,
                source: BudgetSource::Cgroup,
            }),
        }
    }
}

/// How many helm processes run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelmSlots {
    pub slots: usize,
    /// The budget holds not even one helm beside the worker; one runs at a time anyway
    /// (a deployment cannot do without helm), at the risk of going over.
    pub over_budget: bool,
}

/// What one helm process is counted at: its Go memory limit plus helm's code.
pub fn per_helm(helm_memory_limit: u64) -> u64 {
    helm_memory_limit.saturating_add(HELM_CODE)
}

/// The helm processes that fit in `budget` beside the worker, at most `concurrency` (no
/// more can run anyway) and at least one; `concurrency` without a budget.
pub fn helm_slots(budget: Option<u64>, helm_memory_limit: u64, concurrency: usize) -> HelmSlots {
    let concurrency = concurrency.max(1);
    let Some(budget) = budget else {
        return HelmSlots {
            slots: concurrency,
            over_budget: false,
        };
    };
    let fit = budget.saturating_sub(WORKER_RESERVE) / per_helm(helm_memory_limit).max(1);
    let fit = usize::try_from(fit).unwrap_or(usize::MAX);
    HelmSlots {
        slots: fit.clamp(1, concurrency),
        over_budget: fit == 0,
    }
}

/// The memory limit of the cgroup mounted at `root` as a container sees its own:
/// cgroup v2's `memory.max`, else v1's `memory/memory.limit_in_bytes`. `None` without one.
fn cgroup_limit(root: &Path) -> Option<u64> {
    ["memory.max", "memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|file| std::fs::read_to_string(root.join(file)).ok())
        .and_then(|text| parse_limit(&text))
}

/// `max` (v2) and v1's page-rounded `i64::MAX` (9223372036854771712) mean no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 62).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn slots_are_what_fits_beside_the_worker() {
        // The chart: 384 MiB, 32 MiB per helm's Go memory: (384 - 48) / (32 + 48) = 4.2.
        assert_eq!(helm_slots(Some(384 * MIB), 32 * MIB, 4).slots, 4);
        assert_eq!(helm_slots(Some(256 * MIB), 32 * MIB, 4).slots, 2);
        assert_eq!(helm_slots(Some(1024 * MIB), 32 * MIB, 64).slots, 12);
        // Never more than the tasks that could use them.
        assert_eq!(helm_slots(Some(1024 * MIB), 32 * MIB, 4).slots, 4);
        // No budget: the concurrency.
        assert_eq!(
            helm_slots(None, 32 * MIB, 8),
            HelmSlots {
                slots: 8,
                over_budget: false
            }
        );
    }

    #[test]
    fn a_budget_too_small_still_runs_one_helm_and_says_so() {
        assert_eq!(
            helm_slots(Some(100 * MIB), 32 * MIB, 4),
            HelmSlots {
                slots: 1,
                over_budget: true
            }
        );
        assert_eq!(
            helm_slots(Some(0), u64::MAX, 4),
            HelmSlots {
                slots: 1,
                over_budget: true
            }
        );
        assert!(!helm_slots(Some(128 * MIB), 32 * MIB, 4).over_budget);
    }

    #[test]
    fn cgroup_limits_of_both_versions() {
        assert_eq!(parse_limit("402653184\n"), Some(384 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("memory.max"), "268435456\n").unwrap();
        assert_eq!(cgroup_limit(v2.path()), Some(256 * MIB));
        std::fs::write(v2.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(v2.path()), None);

        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "134217728\n",
        )
        .unwrap();
        assert_eq!(cgroup_limit(v1.path()), Some(128 * MIB));

        let none = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_limit(none.path()), None);
    }

    #[test]
    fn a_setting_wins_over_the_cgroup() {
        assert_eq!(
            Budget::find(Some(512 * MIB)),
            Some(Budget {
                bytes: 512 * MIB,
                source: BudgetSource::Setting
            })
        );
    }
}
