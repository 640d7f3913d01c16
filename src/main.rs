//! The `wesam` command.

fn main() {
    keep_freed_memory();
    if let Err(e) = wesam::cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Lets glibc's allocator reuse freed memory instead of returning it to the kernel.
///
/// Training allocates and frees tensors of tens of megabytes at every op. By default glibc maps
/// each one fresh and unmaps it on free, so the kernel zeroes its pages again at every use: a
/// quarter of a ViT-B training step's CPU time went to page faults. Serving them from the heap
/// and never trimming it keeps the pages; the peak footprint is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
