//! The `wesam` command: the command line over the `wesam` library.

mod cli;

fn main() {
    keep_freed_memory();
    serial_elementwise_kernels();
    fixed_matmul_threads();
    if let Err(e) = cli::run() {
        let code = exit_code(&e);
        match code {
            130 => eprintln!("{e}"),
            _ => eprintln!("error: {}", one_line(&e)),
        }
        std::process::exit(code);
    }
}

/// The exit status of a failed command: the shell's code for an interrupt (130) when it was
/// stopped by Ctrl-C (a run after a checkpoint), else 1.
fn exit_code(e: &anyhow::Error) -> i32 {
    let stopped = e
        .downcast_ref::<wesam::adapt::trainer::Interrupted>()
        .is_some()
        || e.downcast_ref::<cli::interrupt::Stopped>().is_some();
    if stopped {
        130
    } else {
        1
    }
}

/// The error and its causes on one line, `a: b: c`, without the backtraces candle attaches to
/// its errors when `RUST_BACKTRACE` is set.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|cause| match cause.downcast_ref::<candle_core::Error>() {
            Some(candle_core::Error::WithBacktrace { inner, .. }) => inner.to_string(),
            _ => cause.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
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

/// Turns off candle's pool for elementwise CPU kernels unless `CANDLE_NUM_THREADS` is set.
///
/// That pool serves one caller at a time, so the images of a training batch, which wesam runs
/// on separate cores, would queue behind each other at every op. Matrix products, where the
/// time of large models goes, keep their own threads (`RAYON_NUM_THREADS`). Measured on 2
/// cores: ViT-B encoder passes and batch-1 training of the small bundled model change by under
/// 5 %; with batches of 2 that model trains 2.2× faster (scripts/bench_small_training.sh).
fn serial_elementwise_kernels() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Setting the environment is only sound before any thread starts: this runs first in
        // `main`.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Sets `RAYON_NUM_THREADS`, when unset, to what rayon's pool takes anyway: the available CPUs.
///
/// Without it candle looks up the physical core count at every matrix product, by reading and
/// parsing `/proc/cpuinfo`: about 5 % of the small model's training time in a perf profile on 2
/// cores. (Where cores have two hardware threads each, candle's products are then split across
/// both.)
fn fixed_matmul_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        if let Ok(n) = std::thread::available_parallelism() {
            // Sound for the same reason as above: no other thread has started yet.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
}
