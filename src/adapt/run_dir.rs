//! A run directory and the files in it: `config.toml` (the resolved configuration),
//! `metrics.csv`, `checkpoint.safetensors` (rewritten atomically during the run), and at the end
//! `adapter.safetensors` (when LoRA is trained) and `merged.safetensors`; and `.lock`, which a
//! running run holds (see [`RunDir::lock`]).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The files of a run directory.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn adapter(&self) -> PathBuf {
        self.0.join("adapter.safetensors")
    }
    pub fn merged(&self) -> PathBuf {
        self.0.join("merged.safetensors")
    }

    /// Whether the directory holds a run that `--resume` could continue.
    pub fn holds_run(&self) -> bool {
        self.checkpoint().exists()
    }

    /// Creates the directory if needed and takes it for this process until the returned lock
    /// is dropped, so that two runs never write one directory; refuses, naming the holder's pid,
    /// when another process has it. The lock is advisory (`flock` on `.lock`) and the kernel
    /// releases it when its process ends, however it ends. Then removes the temporary files that
    /// an interrupted atomic write left behind.
    pub fn lock(&self) -> anyhow::Result<RunLock> {
        std::fs::create_dir_all(&self.0)
            .with_context(|| format!("cannot create run directory {}", self.0.display()))?;
        let path = self.0.join(".lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if !try_lock(&file) {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "{} is in use by another wesam run (pid {}); wait for it to end or choose another \
                 directory",
                self.0.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        std::fs::write(&path, std::process::id().to_string())?;
        remove_temporaries(&self.0)?;
        Ok(RunLock { _file: file })
    }
}

/// A run directory held by this process (see [`RunDir::lock`]); dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Takes an exclusive advisory lock on `file` without waiting; false when another holds it.
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` only reads the descriptor, which `file` keeps open for the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// No advisory locks off Unix: every run gets the directory.
#[cfg(not(unix))]
fn try_lock(_: &std::fs::File) -> bool {
    true
}

/// Removes, under `dir`, the `.NAME.tmp` files of interrupted atomic writes
/// ([`crate::io::temporary_path`]); only the lock holder may, since a running write owns its own.
fn remove_temporaries(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            remove_temporaries(&entry.path())?;
        } else if kind.is_file() && name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_run_directory_is_refused_and_stale_temporaries_go() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir(root.path().join("run"));
        std::fs::create_dir_all(run.0.join("data")).unwrap();
        let stale = [
            run.0.join(".checkpoint.safetensors.tmp"),
            run.0.join("data/.a.png.tmp"),
        ];
        for f in &stale {
            std::fs::write(f, b"half written").unwrap();
        }
        std::fs::write(run.0.join("metrics.csv"), b"kept").unwrap();
        let held = run.lock().unwrap();
        assert!(stale.iter().all(|f| !f.exists()));
        assert!(run.metrics().exists());
        let err = run.lock().unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        run.lock().unwrap();
    }
}
