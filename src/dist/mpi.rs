//! The MPI transport (cargo feature `mpi`, on rsmpi): ranks from `mpirun`/`srun`, bytes through
//! MPI's collectives. GPU gradients travel through host memory (rsmpi knows no device pointers),
//! which for LoRA's few hundred kilobytes per image costs well under a millisecond.

use std::time::Duration;

use anyhow::{bail, Result};
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use super::{Collective, Topology};

/// How long a waiting rank sleeps between looks at a pending barrier.
const POLL: Duration = Duration::from_millis(2);

/// An MPI job's world. Dropping it finalises MPI, so it lives as long as the command.
pub struct Mpi {
    world: SimpleCommunicator,
    topology: Topology,
    // Last: finalises MPI after the communicators are freed.
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI (only the main thread calls it; training's worker threads never do).
    pub fn init() -> Result<Self> {
        let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
            bail!("MPI was already initialised in this process");
        };
        let world = universe.world();
        // The ranks that share this machine's memory, in world order: the index among them is
        // the GPU this rank opens.
        let local = world.split_shared(world.rank());
        let topology = Topology {
            rank: world.rank() as usize,
            world: world.size() as usize,
            local_rank: local.rank() as usize,
        };
        if let Some(launched) = super::launcher_world().filter(|&n| n != topology.world) {
            bail!(
                "the launcher's environment says {launched} ranks, but MPI sees {}: start the job \
                 with the mpirun (or srun --mpi) of the MPI this wesam was built with",
                topology.world
            );
        }
        Ok(Self {
            world,
            topology,
            _universe: universe,
        })
    }
}

impl Collective for Mpi {
    fn topology(&self) -> Topology {
        self.topology
    }

    fn transport(&self) -> String {
        "MPI".into()
    }

    fn all_gather(&self, local: &[u8]) -> Vec<u8> {
        self.barrier();
        let mut all = vec![0u8; local.len() * self.topology.world];
        self.world.all_gather_into(local, &mut all[..]);
        all
    }

    fn broadcast(&self, data: &mut [u8]) {
        self.barrier();
        self.world.process_at_rank(0).broadcast_into(data);
    }

    fn barrier(&self) {
        // MPI's blocking calls spin; a non-blocking barrier polled with sleeps leaves the core
        // to the rank that is still working (on 2 cores, rank 0's evaluation).
        let mut pending = self.world.immediate_barrier();
        loop {
            match pending.test() {
                Ok(_) => return,
                Err(p) => {
                    pending = p;
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
