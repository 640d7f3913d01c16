//! Data-parallel ranks: how many processes run one training job, which one this is, and how they
//! exchange bytes (`docs/distributed.md`).
//!
//! A job is launched the way clusters launch jobs (`mpirun -np N wesam adapt ...`, `srun wesam
//! adapt ...`): one process per rank, each on its own device. [`Collective`] is what training
//! needs from the transport; [`Single`] is the one-process job (every existing run), and
//! [`mpi::Mpi`] (cargo feature `mpi`) the MPI one, [`nccl::Nccl`] (feature `nccl`) NCCL between
//! GPUs over ranks MPI starts. Training's use of it (the batch split by
//! sample index, the gradients folded in sample order) is in [`crate::adapt::data_parallel`].

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;

use anyhow::Result;
use candle_core::Device;

use crate::device::DeviceKind;
use serde::{Deserialize, Serialize};

/// Where this process stands in its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// This process's index, 0 to `world - 1`; rank 0 evaluates and writes.
    pub rank: usize,
    /// The number of processes in the job.
    pub world: usize,
    /// This process's index among those on its machine: the GPU it opens.
    pub local_rank: usize,
}

impl Topology {
    /// The one-process job.
    pub const SINGLE: Self = Self {
        rank: 0,
        world: 1,
        local_rank: 0,
    };

    /// Whether this process writes the run's files and prints its progress.
    pub fn is_primary(&self) -> bool {
        self.rank == 0
    }
}

/// The operations data-parallel training needs from its transport. Every rank calls each
/// operation in the same order; a call returns when every rank has made it.
pub trait Collective {
    fn topology(&self) -> Topology;
    /// What carries the exchanges, for the job's first lines.
    fn transport(&self) -> &'static str;
    /// Every rank's `local` (the same length on every rank), concatenated in rank order, on
    /// every rank.
    fn all_gather(&self, local: &[u8]) -> Vec<u8>;
    /// Rank 0's `data` on every rank (the same length on every rank).
    fn broadcast(&self, data: &mut [u8]);
    /// Waits for every rank without keeping a core busy (rank 0 may evaluate for minutes while
    /// the others wait).
    fn barrier(&self);
    /// Ends every rank's process with `code`: what a rank that failed does, so that no other
    /// rank waits for it forever.
    fn abort(&self, code: i32) -> !;
}

/// The one-process job: every operation is the identity.
pub struct Single;

impl Collective for Single {
    fn topology(&self) -> Topology {
        Topology::SINGLE
    }
    fn transport(&self) -> &'static str {
        "nothing (one process)"
    }
    fn all_gather(&self, local: &[u8]) -> Vec<u8> {
        local.to_vec()
    }
    fn broadcast(&self, _data: &mut [u8]) {}
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Rank 0's bytes, of any length, on every rank (`data` is read on rank 0 only).
pub fn broadcast_bytes(c: &dyn Collective, data: Vec<u8>) -> Vec<u8> {
    let mut len = (data.len() as u64).to_le_bytes();
    c.broadcast(&mut len);
    let mut out = data;
    out.resize(u64::from_le_bytes(len) as usize, 0);
    c.broadcast(&mut out);
    out
}

/// The transport a job uses (`--dist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum DistKind {
    /// MPI when a launcher started several ranks, else one process.
    #[default]
    Auto,
    /// One process, whatever the launcher says.
    None,
    /// MPI ranks (a build with `--features mpi`); GPU gradients go through host memory.
    Mpi,
    /// NCCL between GPU ranks that MPI starts (a build with `--features nccl`).
    Nccl,
}

/// The job's size as the launcher's environment gives it (`mpirun` of Open MPI, MPICH's
/// Hydra, Slurm's `srun`, or `WORLD_SIZE`), if any launcher set it.
pub fn launcher_world() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "SLURM_NTASKS",
        "WORLD_SIZE",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

/// Opens the job's transport and this rank's device (GPU `local_rank` of its machine): the
/// transport `kind` names, or for `auto`, when a launcher started several ranks, NCCL between
/// CUDA devices in a build that has it and MPI otherwise.
pub fn open(kind: DistKind, device: DeviceKind) -> Result<(Box<dyn Collective>, Device)> {
    let launched = launcher_world().unwrap_or(1);
    let nccl = cfg!(feature = "nccl") && device == DeviceKind::Cuda;
    match kind {
        DistKind::None => Ok((Box::new(Single), device.open()?)),
        DistKind::Auto if launched <= 1 => Ok((Box::new(Single), device.open()?)),
        DistKind::Auto if nccl => open_nccl(device),
        DistKind::Auto | DistKind::Mpi => {
            let mpi = open_mpi(launched)?;
            let dev = device.open_ordinal(mpi.topology().local_rank)?;
            Ok((mpi, dev))
        }
        DistKind::Nccl => open_nccl(device),
    }
}

#[cfg(feature = "mpi")]
fn open_mpi(_launched: usize) -> Result<Box<dyn Collective>> {
    Ok(Box::new(mpi::Mpi::init()?))
}

#[cfg(not(feature = "mpi"))]
fn open_mpi(launched: usize) -> Result<Box<dyn Collective>> {
    if launched > 1 {
        anyhow::bail!(
            "the launcher started {launched} ranks, but this wesam was built without MPI: \
             rebuild with `--features mpi` (or run one process with --dist none)"
        )
    }
    anyhow::bail!("--dist mpi: this wesam was built without MPI: rebuild with `--features mpi`")
}

#[cfg(feature = "nccl")]
fn open_nccl(device: DeviceKind) -> Result<(Box<dyn Collective>, Device)> {
    let mpi = mpi::Mpi::init()?;
    let dev = device.open_ordinal(mpi.topology().local_rank)?;
    Ok((Box::new(nccl::Nccl::init(mpi, &dev)?), dev))
}

#[cfg(not(feature = "nccl"))]
fn open_nccl(_device: DeviceKind) -> Result<(Box<dyn Collective>, Device)> {
    anyhow::bail!(
        "--dist nccl: this wesam was built without NCCL: rebuild with `--features nccl` (which \
         brings cuda and mpi)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_is_the_identity() {
        let s = Single;
        assert_eq!(s.all_gather(&[1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(broadcast_bytes(&s, vec![4, 5]), vec![4, 5]);
        assert!(s.topology().is_primary());
    }
}
