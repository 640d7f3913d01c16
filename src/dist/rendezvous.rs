//! Ranks that no MPI started meet through a file on storage they all see
//! (`--dist-init file://PATH`): rank 0 writes what the others need to join it (NCCL's unique
//! id) under a temporary name and renames it into place, the others wait for it, and rank 0
//! removes it once every rank has joined. As with PyTorch's `file://` init, the path is the
//! job's own: a file already there is refused, never read as this job's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The first bytes of a rendezvous file, so that any other file given by mistake is refused.
const MAGIC: &[u8] = b"wesam rendezvous 1\n";

/// How often a waiting rank looks for the file.
const POLL: Duration = Duration::from_millis(50);

/// A job's rendezvous file.
pub struct FileRendezvous {
    path: PathBuf,
}

impl FileRendezvous {
    /// The rendezvous at `path` (nothing is read or written yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the ranks meet, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `payload` for the other ranks (rank 0, once): under a temporary name, then
    /// linked into place, which fails rather than replace a file already there.
    pub fn publish(&self, payload: &[u8]) -> Result<()> {
        let p = &self.path;
        let tmp = crate::io::temporary_path(p);
        let cannot = || format!("cannot write the rendezvous file {}", p.display());
        std::fs::write(&tmp, [MAGIC, payload].concat()).with_context(cannot)?;
        let linked = std::fs::hard_link(&tmp, p);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "the rendezvous file {} already exists: an earlier job's, or another job's \
                 running now; give each job a path of its own (remove it if no job uses it)",
                p.display()
            ),
            r => r.with_context(cannot),
        }
    }

    /// Waits up to `timeout` for rank 0's payload of `len` bytes.
    pub fn wait(&self, len: usize, timeout: Duration) -> Result<Vec<u8>> {
        let p = &self.path;
        let deadline = Instant::now() + timeout;
        let bytes = loop {
            match std::fs::read(p) {
                Ok(b) => break b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if Instant::now() >= deadline {
                        bail!(
                            "rank 0 did not write the rendezvous file {} within {} s: is the \
                             path on storage every rank sees, and did rank 0 start?",
                            p.display(),
                            timeout.as_secs()
                        );
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", p.display()));
                }
            }
        };
        match bytes.strip_prefix(MAGIC) {
            Some(payload) if payload.len() == len => Ok(payload.to_vec()),
            Some(payload) => bail!(
                "the rendezvous file {} holds {} bytes where {len} were expected: written by \
                 another version of wesam?",
                p.display(),
                payload.len()
            ),
            None => bail!(
                "{} is not a wesam rendezvous file: give --dist-init a path no other file uses",
                p.display()
            ),
        }
    }

    /// Removes the file once every rank has read it (rank 0), so that the path can serve the
    /// next job.
    pub fn remove(&self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("cannot remove the rendezvous file {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_rank_reads_what_rank_0_writes_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job");
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || FileRendezvous::new(path).wait(3, Duration::from_secs(20)))
        };
        std::thread::sleep(Duration::from_millis(200));
        let rank0 = FileRendezvous::new(&path);
        rank0.publish(&[7, 8, 9]).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), vec![7, 8, 9]);
        // Only the file remains in the folder: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        rank0.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_file_already_there_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job");
        std::fs::write(&path, b"someone's").unwrap();
        let e = format!(
            "{:#}",
            FileRendezvous::new(&path).publish(&[1]).unwrap_err()
        );
        assert!(e.contains("already exists") && e.contains("job"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"someone's");
        let e = format!(
            "{:#}",
            FileRendezvous::new(&path)
                .wait(1, Duration::ZERO)
                .unwrap_err()
        );
        assert!(e.contains("is not a wesam rendezvous file"), "{e}");
    }

    #[test]
    fn waiting_ends_with_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never");
        let started = Instant::now();
        let e = format!(
            "{:#}",
            FileRendezvous::new(&path)
                .wait(1, Duration::from_millis(200))
                .unwrap_err()
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            e.contains("did not write the rendezvous file") && e.contains("never"),
            "{e}"
        );
        FileRendezvous::new(&path).publish(&[1, 2]).unwrap();
        let e = format!(
            "{:#}",
            FileRendezvous::new(&path)
                .wait(1, Duration::ZERO)
                .unwrap_err()
        );
        assert!(e.contains("holds 2 bytes where 1"), "{e}");
    }
}
