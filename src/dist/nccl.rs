//! The NCCL transport (cargo feature `nccl`, with `cuda` and `mpi`): GPU ranks exchange over
//! NCCL (NVLink, InfiniBand) on their device's stream. MPI starts the ranks, broadcasts NCCL's
//! unique id to build the communicator, waits for every rank without spinning, and ends the job
//! when a rank fails. The exchanged bytes are staged in host memory on both sides, as for MPI;
//! what NCCL adds is the GPU interconnect.

use std::fmt::Display;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id};
use candle_core::Device;

use super::mpi::Mpi;
use super::{Collective, Topology};

/// A job's NCCL communicator over the ranks MPI started.
pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    // Last: MPI is finalised after the communicator is destroyed.
    mpi: Mpi,
}

impl Nccl {
    /// Builds the communicator of the ranks `mpi` holds, on `device` (this rank's GPU), and
    /// checks it with one exchange of every rank's index.
    pub fn init(mpi: Mpi, device: &Device) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            bail!("--dist nccl exchanges between GPUs: give --device cuda");
        };
        let t = mpi.topology();
        let mut id = [0u8; 128];
        if t.is_primary() {
            let made = Id::new().map_err(|e| anyhow!("cannot make NCCL's unique id: {e:?}"))?;
            for (b, c) in id.iter_mut().zip(made.internal()) {
                *b = *c as u8;
            }
        }
        mpi.broadcast(&mut id);
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let stream = cuda.cuda_stream();
        let comm = Comm::from_rank(stream.clone(), t.rank, t.world, id)
            .map_err(|e| anyhow!("cannot build the NCCL communicator: {e:?}"))?;
        let nccl = Self { comm, stream, mpi };
        let ranks = nccl.all_gather(&[t.rank as u8]);
        if ranks.iter().enumerate().any(|(i, &r)| r != i as u8) {
            bail!(
                "NCCL's check exchange gave {ranks:?} for ranks 0..{}",
                t.world
            );
        }
        Ok(nccl)
    }

    /// The value of a CUDA or NCCL call, or the end of the job with what failed.
    fn or_abort<T, E: std::fmt::Debug>(&self, what: impl Display, r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "error: rank {}: NCCL {what}: {e:?}",
                    self.mpi.topology().rank
                );
                self.mpi.abort(1)
            }
        }
    }
}

impl Collective for Nccl {
    fn topology(&self) -> Topology {
        self.mpi.topology()
    }

    fn transport(&self) -> &'static str {
        "NCCL (started by MPI)"
    }

    fn all_gather(&self, local: &[u8]) -> Vec<u8> {
        self.mpi.barrier();
        let world = self.topology().world;
        let send = self.or_abort("copy to the GPU", self.stream.clone_htod(local));
        let mut all = self.or_abort(
            "allocation",
            self.stream.alloc_zeros::<u8>(local.len() * world),
        );
        self.or_abort("all-gather", self.comm.all_gather(&send, &mut all));
        self.or_abort("copy from the GPU", self.stream.clone_dtoh(&all))
    }

    fn broadcast(&self, data: &mut [u8]) {
        self.mpi.barrier();
        let mut buf = self.or_abort("copy to the GPU", self.stream.clone_htod(data));
        self.or_abort("broadcast", self.comm.broadcast_in_place(&mut buf, 0));
        let back = self.or_abort("copy from the GPU", self.stream.clone_dtoh(&buf));
        data.copy_from_slice(&back);
    }

    fn barrier(&self) {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }
}
