//! The allocator the `helm-service` binary (and the in-process pipeline bench) runs on.
//!
//! mimalloc instead of glibc's malloc: the event pipeline allocates and frees many
//! small buffers per event, and glibc's malloc took about a fifth of the process's CPU
//! in a profile of the pipeline bench (see BENCHMARKS.md).

pub use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (stable since v2).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commits arena memory as it is used rather than up front: the default (eager on
/// overcommitting systems) added ~9 MiB to an idle worker's RSS, for no measurable
/// speed. Must run before the first allocation, hence `use_mimalloc!`'s
/// `.init_array` entry.
pub extern "C" fn configure() {
    // SAFETY: sets a process-wide option before mimalloc has allocated anything.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
}

/// Makes mimalloc, configured by [`configure`], the global allocator of a binary.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::MiMalloc = $crate::allocator::MiMalloc;

        // Runs before `main` and before the Rust runtime's first allocation.
        #[cfg(target_os = "linux")]
        #[used]
        #[unsafe(link_section = ".init_array")]
        static CONFIGURE_ALLOCATOR: extern "C" fn() = $crate::allocator::configure;
    };
}
