//! A run directory and the files in it: `config.toml` (the resolved configuration),
//! `metrics.csv`, `checkpoint.safetensors` (rewritten atomically during the run), and at the end
//! `adapter.safetensors` (when LoRA is trained) and `merged.safetensors`.

use std::path::PathBuf;

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
}
