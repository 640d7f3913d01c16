//! What the launcher that started this process says about the job: `mpirun` of Open MPI,
//! MPICH's Hydra, Slurm's `srun`, or the `RANK`/`WORLD_SIZE`/`LOCAL_RANK` of torchrun-style
//! launchers. MPI finds the ranks itself; a job whose ranks meet through a file
//! (`--dist-init file://PATH`) has only this to go by.

use anyhow::{bail, Context, Result};

use super::Topology;

/// One launcher's variables: the job's size, this process's rank, its index on its machine.
struct Family {
    world: &'static str,
    rank: &'static str,
    local_rank: &'static str,
}

/// The launchers, in the order their variables are trusted when several are set (`srun` of an
/// MPI program sets Slurm's and MPI's).
const FAMILIES: [Family; 4] = [
    Family {
        world: "OMPI_COMM_WORLD_SIZE",
        rank: "OMPI_COMM_WORLD_RANK",
        local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
    },
    Family {
        world: "PMI_SIZE",
        rank: "PMI_RANK",
        local_rank: "MPI_LOCALRANKID",
    },
    // The step's, not the allocation's (`SLURM_NTASKS` is also set in a batch script that runs
    // one process).
    Family {
        world: "SLURM_STEP_NUM_TASKS",
        rank: "SLURM_PROCID",
        local_rank: "SLURM_LOCALID",
    },
    Family {
        world: "WORLD_SIZE",
        rank: "RANK",
        local_rank: "LOCAL_RANK",
    },
];

/// The job's size as the launcher's environment gives it, if any launcher set it.
pub fn launcher_world() -> Option<usize> {
    world_in(&|k| std::env::var(k).ok())
}

/// This process's place in the job, from the launcher's environment (`env` looks a variable
/// up), or `None` when no launcher set one.
pub fn launcher_topology(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Topology>> {
    let Some(f) = FAMILIES.iter().find(|f| env(f.world).is_some()) else {
        return Ok(None);
    };
    let number = |key: &str| -> Result<Option<usize>> {
        env(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .with_context(|| format!("the launcher's {key}={v} is not a number"))
            })
            .transpose()
    };
    let world = number(f.world)?.unwrap_or(1);
    let Some(rank) = number(f.rank)? else {
        bail!("the launcher set {} but not {}", f.world, f.rank);
    };
    if world == 0 || rank >= world {
        bail!(
            "the launcher's {}={rank} does not fit {}={world}",
            f.rank,
            f.world
        );
    }
    let local_rank = match number(f.local_rank)? {
        Some(l) => l,
        None if world == 1 => 0,
        None => bail!(
            "the launcher set {} but not {}, which says which GPU of its machine this rank \
             opens: set it (LOCAL_RANK for launchers of your own)",
            f.world,
            f.local_rank
        ),
    };
    Ok(Some(Topology {
        rank,
        world,
        local_rank,
    }))
}

fn world_in(env: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
    FAMILIES
        .iter()
        .find_map(|f| env(f.world)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A launcher's variables.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    fn env<'a>(vars: Vars<'a>) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn each_launcher_gives_rank_world_and_local_rank() {
        let cases: [(Vars, (usize, usize, usize)); 4] = [
            (
                &[
                    ("OMPI_COMM_WORLD_SIZE", "4"),
                    ("OMPI_COMM_WORLD_RANK", "3"),
                    ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                ],
                (3, 4, 1),
            ),
            (
                &[
                    ("PMI_SIZE", "2"),
                    ("PMI_RANK", "1"),
                    ("MPI_LOCALRANKID", "0"),
                ],
                (1, 2, 0),
            ),
            (
                &[
                    ("SLURM_NTASKS", "8"),
                    ("SLURM_STEP_NUM_TASKS", "8"),
                    ("SLURM_PROCID", "5"),
                    ("SLURM_LOCALID", "1"),
                ],
                (5, 8, 1),
            ),
            (
                &[("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")],
                (0, 2, 0),
            ),
        ];
        for (vars, (rank, world, local_rank)) in cases {
            let want = Topology {
                rank,
                world,
                local_rank,
            };
            assert_eq!(launcher_topology(&env(vars)).unwrap(), Some(want));
            assert_eq!(world_in(&env(vars)), Some(world));
        }
    }

    #[test]
    fn a_batch_script_without_srun_is_no_job() {
        let vars = [("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")];
        assert_eq!(launcher_topology(&env(&vars)).unwrap(), None);
        assert_eq!(world_in(&env(&vars)), None);
    }

    #[test]
    fn the_variables_of_one_launcher_are_read_together() {
        // mpirun's rank wins over a stale RANK of another launcher.
        let vars = [
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("RANK", "0"),
        ];
        assert_eq!(launcher_topology(&env(&vars)).unwrap().unwrap().rank, 1);
    }

    #[test]
    fn inconsistent_variables_are_named() {
        let e = |vars: Vars| format!("{:#}", launcher_topology(&env(vars)).unwrap_err());
        assert!(
            e(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("LOCAL_RANK", "0")])
                .contains("RANK=2 does not fit WORLD_SIZE=2")
        );
        assert!(e(&[("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]).contains("not RANK"));
        assert!(e(&[("WORLD_SIZE", "2"), ("RANK", "1")]).contains("LOCAL_RANK"));
        assert!(e(&[("WORLD_SIZE", "two"), ("RANK", "1")]).contains("WORLD_SIZE=two"));
    }
}
