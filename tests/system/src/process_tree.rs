//! Memory of a process and all its descendants (the worker and its helm children), sampled
//! from `/proc` on a thread of its own.
//!
//! What a pod's memory limit sees is the whole tree, not the worker alone. Every
//! `interval` the sampler finds the root's descendants (by parent pid: this kernel has no
//! `/proc/<pid>/task/<tid>/children`, so `/proc` is listed and only pids not seen before
//! are read) and reads each one's `status` (`VmRSS`, `RssAnon`, `VmHWM`) and, every
//! `pss_every` samples, `smaps_rollup` (`Pss`: the kernel walks the page tables for it,
//! 0.3 to 2 ms for a helm). It keeps, over the run, the peak of each sum:
//!
//! - **RSS**: what `ps` shows, summed. Conservative: the pages of the helm binary that
//!   every helm maps are counted once per helm, while the kernel charges them to the
//!   cgroup once.
//! - **PSS**: shared pages divided among the processes that map them; summed, each page
//!   counts once. What the tree really holds in memory.
//! - **anonymous**: heaps and stacks, which cannot be reclaimed (no swap in a pod).
//!
//! A helm lives a few hundred milliseconds, so a sampled peak can miss the last
//! `interval` of growth. Each process's own `VmHWM` (its exact peak, kept by the kernel)
//! bounds that: **HWM bound** is, per sample, the sum of the peaks of the processes alive
//! then, never below the true peak of the sum at that moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One process's memory figures, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub rss: u64,
    pub pss: u64,
    pub anon: u64,
    pub hwm: u64,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.rss += other.rss;
        self.pss += other.pss;
        self.anon += other.anon;
        self.hwm += other.hwm;
    }

    fn max(&mut self, other: Figures) {
        self.rss = self.rss.max(other.rss);
        self.pss = self.pss.max(other.pss);
        self.anon = self.anon.max(other.anon);
        self.hwm = self.hwm.max(other.hwm);
    }
}

/// A descendant seen during the run.
#[derive(Debug, Clone)]
pub struct Descendant {
    pub pid: u32,
    /// `/proc/<pid>/comm` (e.g. `helm`).
    pub name: String,
    /// The largest of its figures seen (its `hwm` is its own peak RSS up to its last
    /// sample).
    pub peak: Figures,
    /// Its user + system CPU time at its last sample.
    pub cpu: Duration,
}

/// What the sampler saw.
#[derive(Debug, Clone)]
pub struct TreeMemory {
    pub interval: Duration,
    pub samples: u64,
    /// Peaks over the run of the sums over the tree (each sum peaks on its own sample;
    /// `hwm` is the HWM bound).
    pub peak: Figures,
    /// Most processes in the tree at once, the root included.
    pub most_processes: usize,
    /// The root's largest figures (its `hwm` is its peak RSS).
    pub root: Figures,
    /// Every descendant, in the order first seen.
    pub descendants: Vec<Descendant>,
    /// Mean time one sample took (finding the tree and reading it).
    pub sample_cost: Duration,
}

impl TreeMemory {
    /// The largest of each figure among descendants named `name` (`hwm`: the largest own
    /// peak RSS), in KiB.
    pub fn largest_child(&self, name: &str) -> Figures {
        let mut largest = Figures::default();
        for d in self.descendants.iter().filter(|d| d.name == name) {
            largest.max(d.peak);
        }
        largest
    }

    /// Mean CPU time of the descendants named `name` (zero when none).
    pub fn mean_child_cpu(&self, name: &str) -> Duration {
        let cpus: Vec<Duration> = self
            .descendants
            .iter()
            .filter(|d| d.name == name)
            .map(|d| d.cpu)
            .collect();
        cpus.iter().sum::<Duration>() / u32::try_from(cpus.len().max(1)).unwrap_or(u32::MAX)
    }

    /// Descendants named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.descendants.iter().filter(|d| d.name == name).count()
    }
}

/// How often to sample.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub interval: Duration,
    /// Read PSS on every this many samples; 0: never (the PSS figures stay 0).
    pub pss_every: u32,
}

/// A running sampler; [`ProcessTreeSampler::finish`] stops it and returns what it saw.
pub struct ProcessTreeSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<TreeMemory>,
}

impl ProcessTreeSampler {
    /// Samples `root` and its descendants as `sampling` says until finished.
    pub fn start(root: u32, sampling: Sampling) -> ProcessTreeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("process-tree-sampler".into())
            .spawn(move || sample_until(root, sampling, &flag))
            .expect("spawning the sampler thread");
        ProcessTreeSampler { stop, thread }
    }

    /// Takes one last sample and returns the run's figures.
    pub fn finish(self) -> TreeMemory {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the sampler thread panicked")
    }
}

fn sample_until(root: u32, sampling: Sampling, stop: &AtomicBool) -> TreeMemory {
    let Sampling {
        interval,
        pss_every,
    } = sampling;
    let mut tree = Tree::new(root);
    let mut seen: BTreeMap<u32, Descendant> = BTreeMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut memory = TreeMemory {
        interval,
        samples: 0,
        peak: Figures::default(),
        most_processes: 0,
        root: Figures::default(),
        descendants: Vec::new(),
        sample_cost: Duration::ZERO,
    };
    let mut spent = Duration::ZERO;
    let mut next = Instant::now();
    loop {
        // Read before sampling, so the sample after the caller's last event is taken.
        let last = stop.load(Ordering::SeqCst);
        let started = Instant::now();
        let members = tree.members();
        let with_pss = pss_every > 0 && memory.samples.is_multiple_of(u64::from(pss_every));
        let mut sum = Figures::default();
        let mut alive = 0;
        for pid in members {
            let Some(figures) = read_figures(pid, with_pss) else {
                // Gone between the listing and the read.
                continue;
            };
            alive += 1;
            sum.add(figures);
            if pid == root {
                memory.root.max(figures);
            } else {
                let entry = seen.entry(pid).or_insert_with(|| {
                    order.push(pid);
                    Descendant {
                        pid,
                        name: comm(pid),
                        peak: Figures::default(),
                        cpu: Duration::ZERO,
                    }
                });
                entry.peak.max(figures);
                entry.cpu = cpu_time(pid).unwrap_or(entry.cpu).max(entry.cpu);
            }
        }
        memory.peak.max(sum);
        memory.most_processes = memory.most_processes.max(alive);
        memory.samples += 1;
        spent += started.elapsed();
        if last {
            break;
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            // A sampling period, not a wait for an event.
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    memory.descendants = order
        .into_iter()
        .filter_map(|pid| seen.remove(&pid))
        .collect();
    memory.sample_cost = spent / u32::try_from(memory.samples.max(1)).unwrap_or(u32::MAX);
    memory
}

/// The root and its descendants, kept up to date from `/proc` listings.
struct Tree {
    root: u32,
    /// Every pid listed last time, with its parent (0 when unreadable).
    parents: HashMap<u32, u32>,
}

impl Tree {
    fn new(root: u32) -> Tree {
        Tree {
            root,
            parents: HashMap::new(),
        }
    }

    /// The root and every process descending from it now.
    fn members(&mut self) -> Vec<u32> {
        let listed: HashSet<u32> = match std::fs::read_dir("/proc") {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => HashSet::new(),
        };
        // A pid that left the listing may come back as another process: forget it.
        self.parents.retain(|pid, _| listed.contains(pid));
        for pid in listed {
            self.parents.entry(pid).or_insert_with(|| parent_of(pid));
        }
        let mut members = vec![self.root];
        let mut frontier = vec![self.root];
        while let Some(parent) = frontier.pop() {
            for (&pid, &ppid) in &self.parents {
                if ppid == parent && pid != parent {
                    members.push(pid);
                    frontier.push(pid);
                }
            }
        }
        members
    }
}

/// The parent pid from `/proc/<pid>/stat` (0 when the process is gone).
fn parent_of(pid: u32) -> u32 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process so far (all threads), from `/proc/<pid>/stat`.
/// Assumes the usual 100 clock ticks per second. `None` if unreadable.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may itself hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after comm.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The KiB of `field` (e.g. `VmRSS:`) in a `/proc` key-value file.
fn kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// `None` when the process is gone, or a zombie (no memory left to read). PSS is 0
/// unless `with_pss`.
fn read_figures(pid: u32, with_pss: bool) -> Option<Figures> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = kib(&status, "VmRSS:")?;
    let pss = if with_pss {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        // Without smaps_rollup (an old kernel), RSS stands in: never an understatement.
        kib(&rollup, "Pss:").unwrap_or(rss)
    } else {
        0
    };
    Some(Figures {
        rss,
        pss,
        anon: kib(&status, "RssAnon:").unwrap_or(rss),
        hwm: kib(&status, "VmHWM:").unwrap_or(rss),
    })
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_child_and_its_memory() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let sampler = ProcessTreeSampler::start(
            std::process::id(),
            Sampling {
                interval: Duration::from_millis(5),
                pss_every: 1,
            },
        );
        // Until the sampler has listed the child (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        let memory = loop {
            std::thread::sleep(Duration::from_millis(20));
            let mut probe = Tree::new(std::process::id());
            if probe.members().contains(&child.id()) || Instant::now() > deadline {
                break sampler.finish();
            }
        };
        child.kill().ok();
        child.wait().ok();
        assert!(memory.samples >= 2, "{memory:?}");
        assert!(memory.root.rss > 0 && memory.root.hwm >= memory.root.rss);
        let sleep = memory
            .descendants
            .iter()
            .find(|d| d.pid == child.id())
            .unwrap_or_else(|| panic!("the child is one of {:?}", memory.descendants));
        assert_eq!(sleep.name, "sleep");
        assert!(sleep.peak.rss > 0);
        assert!(memory.peak.rss >= memory.root.rss.max(sleep.peak.rss));
        assert!(memory.peak.hwm >= memory.peak.rss);
        assert!(memory.peak.pss <= memory.peak.rss);
        assert_eq!(memory.most_processes, 2);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time(std::process::id()).is_some());
    }
}
