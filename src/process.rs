//! Settings the process makes for itself once, first thing in `main`.

/// Transparent huge pages off for this process. mimalloc asks for them on
/// its arenas (and the kernel uses them anyway where THP is "always"): a
/// 2 MiB page stays resident while any allocation in it lives, so what a
/// first sync leaves scattered over the arenas kept far more memory
/// resident than it uses. With them off the resident size at rest with
/// 10,000 managed objects went from 170 to 117 MiB, latencies unchanged
/// (docs/BENCHMARKS.md). Best effort: a kernel without the setting keeps
/// its default.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// `mi_option_purge_delay` in mimalloc 3's mimalloc.h (the Rust binding
/// does not name it): the 16th option.
#[cfg(not(feature = "system-allocator"))]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed pages back to the system as they are freed.
/// By default it waits a second, and then purges only when the thread
/// that freed them allocates again: at rest no thread does, and the
/// garbage of a first sync stayed resident (with 10,000 objects, 117 MiB
/// at rest against 105 MiB purging at once, latencies unchanged; a thread
/// forcing a collection every 10 s got 112 MiB; docs/BENCHMARKS.md).
pub fn purge_freed_memory_at_once() {
    #[cfg(not(feature = "system-allocator"))]
    // SAFETY: mi_option_set takes plain values and may be called any time.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn huge_pages_are_off_for_the_process_afterwards() {
        super::no_transparent_huge_pages();
        // SAFETY: as above; PR_GET_THP_DISABLE returns the flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }

    #[cfg(not(feature = "system-allocator"))]
    #[test]
    fn mimalloc_purges_at_once_afterwards() {
        // SAFETY: mi_option_get takes a plain value.
        let delay = || unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        // The option at that index is the purge delay: mimalloc 3's default
        // for it is 1000 ms, and no other option's is.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay(), 1000);
        }
        super::purge_freed_memory_at_once();
        assert_eq!(delay(), 0);
    }
}
