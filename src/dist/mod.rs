//! Data-parallel ranks: how many processes run one training job, which one this is, and how they
//! exchange bytes (`docs/distributed.md`).
//!
//! A job is launched the way clusters launch jobs (`mpirun -np N wesam adapt ...`, `srun wesam
//! adapt ...`): one process per rank, each on its own device. [`Collective`] is what training
//! needs from the transport; [`Single`] is the one-process job (every existing run), and
//! [`mpi::Mpi`] (cargo feature `mpi`) the MPI one, [`nccl::Nccl`] (feature `nccl`) NCCL between
//! GPUs, over ranks MPI starts or ranks any launcher starts that meet through a file
//! ([`rendezvous`]). Training's use of it (the batch split by
//! sample index, the gradients folded in sample order) is in [`crate::adapt::data_parallel`].

pub mod launcher;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rendezvous;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

pub use launcher::launcher_world;

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
    fn transport(&self) -> String;
    /// Every rank's `local` (the same length on every rank), concatenated in rank order, on
    /// every rank.
    fn all_gather(&self, local: &[u8]) -> Vec<u8>;
    /// Every rank's `local` (the same number of elements on every rank) as f32, concatenated
    /// in rank order into one vector on `local`'s device. Through host memory here; NCCL
    /// gathers GPU tensors on the device.
    fn all_gather_tensor(&self, local: &Tensor) -> Result<Tensor> {
        let values = local
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all: Vec<f32> = self
            .all_gather(&bytes)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let n = all.len();
        Ok(Tensor::from_vec(all, n, local.device())?)
    }
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
    fn transport(&self) -> String {
        "nothing (one process)".into()
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
    /// When a launcher started several ranks: NCCL between CUDA devices in a build that has it
    /// (or with `--dist-init`), else MPI; otherwise one process.
    #[default]
    Auto,
    /// One process, whatever the launcher says.
    None,
    /// MPI ranks (a build with `--features mpi`); GPU gradients go through host memory.
    Mpi,
    /// NCCL between GPU ranks that MPI starts or that meet through `--dist-init` (a build with
    /// `--features nccl`).
    Nccl,
}

/// How a job's ranks are joined (`--dist`, `--dist-init`, `--dist-timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistOptions {
    /// The transport.
    pub kind: DistKind,
    /// Where NCCL ranks that no MPI started meet: the `PATH` of `--dist-init file://PATH`.
    pub init: Option<PathBuf>,
    /// How long an NCCL rank waits for the others (at the rendezvous, in an exchange, at a
    /// barrier while rank 0 evaluates) before it ends the job as hung.
    pub timeout: Duration,
}

/// An NCCL rank's longest wait for the others: PyTorch's former default, long enough for rank
/// 0's evaluation of a large split.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The `PATH` of `--dist-init file://PATH`.
pub fn parse_init(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("file://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "`{s}`: give file://PATH, a file on storage every rank sees (MPI ranks need none)"
        )),
    }
}

/// Opens the job's transport and this rank's device (GPU `local_rank` of its machine): the
/// transport `opts.kind` names, or for `auto`, when a launcher started several ranks, NCCL
/// between CUDA devices in a build that has it (or when ranks meet through a file) and MPI
/// otherwise.
pub fn open(opts: &DistOptions, device: DeviceKind) -> Result<(Box<dyn Collective>, Device)> {
    let launched = launcher_world().unwrap_or(1);
    let nccl = cfg!(feature = "nccl") && device == DeviceKind::Cuda;
    match opts.kind {
        DistKind::None => Ok((Box::new(Single), device.open()?)),
        DistKind::Auto if launched <= 1 => Ok((Box::new(Single), device.open()?)),
        DistKind::Auto if nccl || opts.init.is_some() => open_nccl(opts, device),
        DistKind::Mpi if opts.init.is_some() => {
            bail!("--dist-init joins NCCL ranks; MPI joins its ranks itself: leave it out")
        }
        DistKind::Auto | DistKind::Mpi => {
            let mpi = open_mpi(launched)?;
            let dev = device.open_ordinal(mpi.topology().local_rank)?;
            Ok((mpi, dev))
        }
        DistKind::Nccl => open_nccl(opts, device),
    }
}

#[cfg(feature = "mpi")]
fn open_mpi(_launched: usize) -> Result<Box<dyn Collective>> {
    Ok(Box::new(mpi::Mpi::init()?))
}

#[cfg(not(feature = "mpi"))]
fn open_mpi(launched: usize) -> Result<Box<dyn Collective>> {
    if launched > 1 {
        bail!(
            "the launcher started {launched} ranks, but this wesam was built without MPI: \
             rebuild with `--features mpi` (or run one process with --dist none)"
        )
    }
    bail!("--dist mpi: this wesam was built without MPI: rebuild with `--features mpi`")
}

#[cfg(feature = "nccl")]
fn open_nccl(opts: &DistOptions, device: DeviceKind) -> Result<(Box<dyn Collective>, Device)> {
    use nccl::{Bootstrap, Nccl};
    let boot = match &opts.init {
        #[cfg(feature = "mpi")]
        None => Bootstrap::Mpi(mpi::Mpi::init()?),
        #[cfg(not(feature = "mpi"))]
        None => bail!(
            "NCCL ranks meet through MPI or through a file: give --dist-init file://PATH, or \
             rebuild with `--features nccl,mpi` and start the job with mpirun"
        ),
        Some(path) => Bootstrap::File {
            rendezvous: rendezvous::FileRendezvous::new(path),
            topology: launcher::launcher_topology(&|k| std::env::var(k).ok())?
                .unwrap_or(Topology::SINGLE),
        },
    };
    let dev = device.open_ordinal(boot.topology().local_rank)?;
    Ok((Box::new(Nccl::init(boot, &dev, opts.timeout)?), dev))
}

#[cfg(not(feature = "nccl"))]
fn open_nccl(opts: &DistOptions, _device: DeviceKind) -> Result<(Box<dyn Collective>, Device)> {
    let why = match opts.init {
        Some(_) => "--dist-init joins NCCL ranks, but",
        None => "--dist nccl:",
    };
    bail!(
        "{why} this wesam was built without NCCL: rebuild with `--features nccl` (which brings \
         cuda; add mpi to start NCCL ranks with mpirun)"
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

    #[test]
    fn the_host_gather_of_one_rank_keeps_every_value() {
        let t = Tensor::new(&[[1.5f32, -2.0], [3.25, f32::MIN_POSITIVE]], &Device::Cpu).unwrap();
        let all = Single.all_gather_tensor(&t).unwrap();
        assert_eq!(
            all.to_vec1::<f32>().unwrap(),
            vec![1.5, -2.0, 3.25, f32::MIN_POSITIVE]
        );
    }

    #[test]
    fn dist_init_takes_file_paths_only() {
        assert_eq!(
            parse_init("file:///shared/job-7"),
            Ok("/shared/job-7".into())
        );
        assert!(parse_init("tcp://10.0.0.1:29500")
            .unwrap_err()
            .contains("file://PATH"));
        assert!(parse_init("file://").is_err());
    }
}
