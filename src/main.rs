//! The `actormq` command: runs the broker (`actormq serve`, the default) or talks to a
//! running one (declare, bind, publish, consume, ...). See `actormq --help`.

mod cli;

fn main() -> std::process::ExitCode {
    purge_by_reset();
    cli::main()
}

/// The broker allocates and frees small objects (messages, batches, actor envelopes)
/// at a high rate from several threads: mimalloc's thread-local free lists beat glibc's
/// malloc there (scenario 6, 200 consumer connections: 350-390k -> 445k msg/s). Built
/// without transparent huge pages, so an idle broker stays small (7.6 MiB RSS; 21 MiB
/// with them). The library leaves the allocator to whoever embeds it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_decommits` (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DECOMMITS: std::ffi::c_int = 5;

extern "C" {
    // From the mimalloc library the `mimalloc` crate links in (its C API).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Has mimalloc give memory it purges back with `MADV_FREE` (the kernel takes the
/// pages only when it needs them) instead of `MADV_DONTNEED` (taken at once, so the
/// next use of the page faults and the kernel zeroes it), unless
/// `MIMALLOC_PURGE_DECOMMITS` says otherwise. Messages are allocated and freed
/// across threads at the publish rate, and mimalloc purged their pages a second
/// after they emptied: a 3-node cluster's quorum queue took 0.21-0.61 page faults per
/// message on each node, about a tenth of its CPU, and 0.01-0.12 with this
/// (docs/BENCHMARKS.md, 2026-12-07). The cost: memory purged this way still
/// counts in the process's RSS (`mem_rss` of `/api/nodes`) until the kernel reclaims
/// it; the broker's memory alarm counts messages, not RSS.
fn purge_by_reset() {
    if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_none() {
        // SAFETY: sets one of mimalloc's options (a plain store), on the main thread
        // before any other thread exists.
        unsafe { mi_option_set(MI_OPTION_PURGE_DECOMMITS, 0) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purged_memory_is_reset_not_decommitted() {
        if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_some() {
            return; // the environment decides
        }
        // SAFETY: reads one of mimalloc's options.
        let before = unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DECOMMITS) };
        assert_eq!(before, 1, "mimalloc decommits on a purge by default");
        super::purge_by_reset();
        // SAFETY: as above.
        let after = unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DECOMMITS) };
        assert_eq!(after, 0);
    }
}
