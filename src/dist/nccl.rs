//! The NCCL transport (cargo feature `nccl`, with `cuda`): GPU ranks exchange over NCCL
//! (NVLink, InfiniBand) on their device's stream. The ranks are joined either by MPI (a build
//! with `mpi` too, under `mpirun`/`srun --mpi`: MPI broadcasts NCCL's unique id, waits at
//! barriers, ends the job when a rank fails) or, without MPI, through a rendezvous file
//! (`--dist-init file://PATH`, rank and world from the launcher's environment). Gradients are gathered on the device; a rank waits
//! for each exchange by polling an event, never spinning a core, and ends the job when the
//! others have not answered within the timeout (a rank died or hangs).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

#[cfg(feature = "mpi")]
use super::mpi::Mpi;
use super::rendezvous::FileRendezvous;
use super::{Collective, Topology};

/// How often a waiting rank looks at its pending exchange.
const POLL: Duration = Duration::from_millis(2);

/// The length of NCCL's unique id.
const ID_BYTES: usize = 128;

/// How the ranks of an NCCL job find each other.
pub enum Bootstrap {
    /// MPI started the ranks: it carries the unique id and the barriers.
    #[cfg(feature = "mpi")]
    Mpi(Mpi),
    /// Another launcher started them: rank 0 writes the unique id to a file the others read.
    File {
        rendezvous: FileRendezvous,
        topology: Topology,
    },
}

impl Bootstrap {
    /// This rank's place in the job.
    pub fn topology(&self) -> Topology {
        match self {
            #[cfg(feature = "mpi")]
            Bootstrap::Mpi(mpi) => mpi.topology(),
            Bootstrap::File { topology, .. } => *topology,
        }
    }
}

/// A job's NCCL communicator.
pub struct Nccl {
    // Taken and dropped (which aborts NCCL's kernels) when a rank gives up on the others.
    comm: RefCell<Option<Comm>>,
    stream: Arc<CudaStream>,
    topology: Topology,
    timeout: Duration,
    transport: String,
    // Last: MPI is finalised after the communicator is destroyed.
    #[cfg(feature = "mpi")]
    mpi: Option<Mpi>,
}

impl Nccl {
    /// Builds the communicator of the ranks `boot` joins, on `device` (this rank's GPU), and
    /// checks it with one exchange of every rank's index. A rank waits at most `timeout` for
    /// the others.
    pub fn init(boot: Bootstrap, device: &Device, timeout: Duration) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            bail!("--dist nccl exchanges between GPUs: give --device cuda");
        };
        let topology = boot.topology();
        let mut id = [0u8; ID_BYTES];
        if topology.is_primary() {
            let made = Id::new().map_err(|e| anyhow!("cannot make NCCL's unique id: {e:?}"))?;
            for (b, c) in id.iter_mut().zip(made.internal()) {
                *b = *c as u8;
            }
        }
        #[cfg(feature = "mpi")]
        let mut launcher = None;
        let (rendezvous, transport) = match boot {
            #[cfg(feature = "mpi")]
            Bootstrap::Mpi(mpi) => {
                mpi.broadcast(&mut id);
                launcher = Some(mpi);
                (None, "NCCL (started by MPI)".to_string())
            }
            Bootstrap::File { rendezvous, .. } => {
                if topology.is_primary() {
                    rendezvous.publish(&id)?;
                } else {
                    id.copy_from_slice(&rendezvous.wait(ID_BYTES, timeout)?);
                }
                let how = format!("NCCL (joined at {})", rendezvous.path().display());
                (Some(rendezvous), how)
            }
        };
        #[allow(unused_mut)]
        let mut made = Self::connect(id, cuda.cuda_stream(), topology, timeout, transport);
        // Every rank has joined (or the job failed, whose error is the one to report): the file
        // can serve the next job.
        if let (Some(r), true) = (&rendezvous, topology.is_primary()) {
            let removed = r.remove();
            if made.is_ok() {
                removed?;
            }
        }
        #[cfg(feature = "mpi")]
        if let Ok(nccl) = &mut made {
            nccl.mpi = launcher;
        }
        made
    }

    /// The communicator of the ranks that share `id`, checked.
    fn connect(
        id: [u8; ID_BYTES],
        stream: Arc<CudaStream>,
        topology: Topology,
        timeout: Duration,
        transport: String,
    ) -> Result<Self> {
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        // NCCL builds the communicator on the thread's current device: this rank's.
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| anyhow!("cannot use the GPU for NCCL: {e:?}"))?;
        // NCCL waits for every rank to connect, with no limit of its own.
        let joined = within(timeout, topology, || {
            Comm::from_rank(stream.clone(), topology.rank, topology.world, id)
        });
        let comm = joined.map_err(|e| anyhow!("cannot build the NCCL communicator: {e:?}"))?;
        let nccl = Self {
            comm: RefCell::new(Some(comm)),
            stream,
            topology,
            timeout,
            transport,
            #[cfg(feature = "mpi")]
            mpi: None,
        };
        let ranks = nccl.all_gather(&[topology.rank as u8]);
        if ranks.iter().enumerate().any(|(i, &r)| r != i as u8) {
            bail!(
                "NCCL's check exchange gave {ranks:?} for ranks 0..{}",
                topology.world
            );
        }
        Ok(nccl)
    }

    /// The value of a CUDA or NCCL call, or the end of the job with what failed.
    fn or_abort<T, E: std::fmt::Debug>(&self, what: &str, r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: rank {}: NCCL {what}: {e:?}", self.topology.rank);
                self.abort(1)
            }
        }
    }

    /// Runs `op` with the communicator.
    fn with_comm<T>(&self, op: impl FnOnce(&Comm) -> T) -> T {
        match self.comm.borrow().as_ref() {
            Some(comm) => op(comm),
            None => {
                eprintln!(
                    "error: rank {}: the NCCL communicator was aborted",
                    self.topology.rank
                );
                std::process::exit(1)
            }
        }
    }

    /// Waits for the work queued on the stream (the exchange `what`) by polling, so that a
    /// rank waiting for the others keeps no core busy; ends the job after the timeout.
    fn wait(&self, what: &str) {
        let done = self.or_abort("event", self.stream.record_event(None));
        let deadline = Instant::now() + self.timeout;
        while !done.is_complete() {
            if Instant::now() >= deadline {
                eprintln!(
                    "error: rank {}: the other ranks did not join the NCCL {what} within {} s: \
                     a rank died or hangs (--dist-timeout sets the wait)",
                    self.topology.rank,
                    self.timeout.as_secs()
                );
                self.abort(1)
            }
            std::thread::sleep(POLL);
        }
    }
}

/// `f()`, or the end of the process with an error when it has not returned within `timeout` (a
/// call that waits for the other ranks, some of which never came).
fn within<T>(timeout: Duration, topology: Topology, f: impl FnOnce() -> T) -> T {
    let (done, waiting) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if waiting.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!(
                "error: rank {}: not every one of the {} ranks joined the NCCL communicator \
                 within {} s: a rank did not start, died, or uses another --dist-init \
                 (--dist-timeout sets the wait)",
                topology.rank,
                topology.world,
                timeout.as_secs()
            );
            std::process::exit(1)
        }
    });
    let out = f();
    drop(done);
    let _ = watchdog.join();
    out
}

/// NCCL's all-gather of a contiguous f32 GPU tensor, as a candle operation, so that the result
/// stays a tensor on the device.
struct AllGather<'a>(&'a Comm);

impl CustomOp1 for AllGather<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-gather"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL gathers GPU tensors only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("NCCL gathers contiguous tensors only")
        };
        let local = s.as_cuda_slice::<f32>()?.slice(start..end);
        let n = (end - start) * self.0.world_size();
        let mut all = s.device().alloc_zeros::<f32>(n)?;
        self.0
            .all_gather(&local, &mut all)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-gather: {e:?}")))?;
        Ok((
            CudaStorage::wrap_cuda_slice(all, s.device().clone()),
            n.into(),
        ))
    }
}

impl Collective for Nccl {
    fn topology(&self) -> Topology {
        self.topology
    }

    fn transport(&self) -> String {
        self.transport.clone()
    }

    fn all_gather(&self, local: &[u8]) -> Vec<u8> {
        let world = self.topology.world;
        let send = self.or_abort("copy to the GPU", self.stream.clone_htod(local));
        let mut all = self.or_abort(
            "allocation",
            self.stream.alloc_zeros::<u8>(local.len() * world),
        );
        let gathered = self.with_comm(|c| c.all_gather(&send, &mut all));
        self.or_abort("all-gather", gathered);
        self.wait("all-gather");
        self.or_abort("copy from the GPU", self.stream.clone_dtoh(&all))
    }

    fn all_gather_tensor(&self, local: &Tensor) -> Result<Tensor> {
        if !local.device().is_cuda() {
            bail!("NCCL gathers GPU tensors only");
        }
        let local = local.flatten_all()?.to_dtype(DType::F32)?.contiguous()?;
        let all = self.with_comm(|c| local.apply_op1_no_bwd(&AllGather(c)))?;
        self.wait("gradient all-gather");
        Ok(all)
    }

    fn broadcast(&self, data: &mut [u8]) {
        let mut buf = self.or_abort("copy to the GPU", self.stream.clone_htod(data));
        let sent = self.with_comm(|c| c.broadcast_in_place(&mut buf, 0));
        self.or_abort("broadcast", sent);
        self.wait("broadcast");
        let back = self.or_abort("copy from the GPU", self.stream.clone_dtoh(&buf));
        data.copy_from_slice(&back);
    }

    fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return mpi.barrier();
        }
        let mut one = self.or_abort("allocation", self.stream.alloc_zeros::<f32>(1));
        let reduced = self.with_comm(|c| c.all_reduce_in_place(&mut one, &ReduceOp::Sum));
        self.or_abort("barrier", reduced);
        self.wait("barrier");
    }

    fn abort(&self, code: i32) -> ! {
        // Dropping the communicator aborts NCCL's pending kernels, so that the process can end
        // (cudarc panics when the abort fails: nothing more can be done then).
        if let Some(comm) = self.comm.try_borrow_mut().ok().and_then(|mut c| c.take()) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(comm)));
        }
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.abort(code)
        }
        // The launcher ends the other ranks, or they end at their own timeout.
        std::process::exit(code)
    }
}
