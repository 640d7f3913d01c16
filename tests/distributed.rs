//! Data-parallel training. In every build: a rank's share of a step, exchanged through the
//! one-process transport, gives the gradients one process computes, bit for bit. Under `mpirun`
//! (a build with `--features mpi`; CI runs `cargo test --release --features mpi --test
//! distributed`): two ranks with one image each end with the same weights, bit for bit, as one
//! process with batches of two, and as each other; a job that crashed and was resumed under
//! `mpirun` ends where an uninterrupted one ends; a rank that dies ends the whole job within a
//! bounded time.

mod common;

use candle_core::{Device, Tensor};

/// The gradients and loss terms of the exchange (`replica_gradients` on one rank: every
/// image's gradients written, read back and summed in batch order) equal `batch_gradients`', bit
/// for bit, with a hole in the batch (an image that failed to load).
#[test]
fn the_gradient_exchange_reproduces_one_process_gradients_bit_for_bit() {
    exchange_matches_one_process(&Device::Cpu, &wesam::dist::Single);
}

/// The same through NCCL on one GPU (run by `scripts/gpu_check.sh`; it needs a GPU and the
/// NCCL library): a one-rank communicator joined through a rendezvous file, which rank 0
/// removes, and the gradients gathered on the device.
#[cfg(feature = "nccl")]
#[test]
fn nccl_on_one_gpu_reproduces_one_process_gradients_bit_for_bit() {
    use wesam::dist::nccl::{Bootstrap, Nccl};
    use wesam::dist::rendezvous::FileRendezvous;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rendezvous");
    let dev = Device::new_cuda(0).unwrap();
    let boot = Bootstrap::File {
        rendezvous: FileRendezvous::new(&path),
        topology: wesam::dist::Topology::SINGLE,
    };
    let nccl = Nccl::init(boot, &dev, std::time::Duration::from_secs(60)).unwrap();
    assert!(!path.exists(), "the rendezvous file outlived the join");
    exchange_matches_one_process(&dev, &nccl);
}

fn exchange_matches_one_process(dev: &Device, dist: &dyn wesam::dist::Collective) {
    use std::sync::atomic::AtomicBool;
    use wesam::adapt::config::AdaptConfig;
    use wesam::adapt::data_parallel::replica_gradients;
    use wesam::adapt::step::{batch_gradients, StepModels, StepSample};

    let (sam, lora) = common::tiny_sam_with_lora(dev);
    let vars: Vec<Tensor> = lora
        .named_vars()
        .iter()
        .map(|(_, v)| v.as_tensor().clone())
        .collect();
    let models = StepModels {
        anchor: &sam,
        model: &sam,
        lora: Some(&lora),
        teacher: Some(&lora),
    };
    let cfg = AdaptConfig::default();
    // Positions 0 and 2 of a batch of 3.
    let batch = || -> Vec<StepSample> {
        [0, 2]
            .into_iter()
            .map(|p| StepSample {
                sample: common::synth_sample(p as u64),
                seed: 40 + p as u64,
                position: p,
            })
            .collect()
    };
    let (want, want_log) = batch_gradients(&cfg, models, &mut batch(), &vars)
        .unwrap()
        .unwrap();
    let interrupt = AtomicBool::new(false);
    let mut exchange = std::time::Duration::ZERO;
    let (got, got_log) = replica_gradients(
        &cfg,
        models,
        &mut batch(),
        3,
        &vars,
        dist,
        &interrupt,
        &mut exchange,
    )
    .unwrap()
    .unwrap();
    assert_eq!(got_log, want_log);
    for (i, v) in vars.iter().enumerate() {
        let (g, w) = (got.get(v).unwrap(), want.get(v).unwrap());
        assert!(g.device().same_device(w.device()));
        assert!(common::max_abs(w) > 0.0, "variable {i} has no gradient");
        assert!(bits(g) == bits(w), "variable {i} differs");
    }
}

/// A job this build cannot join stops before it reads or writes anything, in one line that says
/// why: ranks told to meet through a file in a build without NCCL, a file rendezvous for MPI
/// ranks, and an address that is not a file.
#[cfg(not(feature = "nccl"))]
#[test]
fn a_job_this_build_cannot_join_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let rendezvous = format!("file://{}", dir.path().join("rendezvous").display());
    let out = dir.path().join("run");
    let adapt = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wesam"))
            .args(["adapt", "--dataset", "kvasir", "--prompt", "box", "--out"])
            .arg(&out)
            .args(extra)
            .envs([("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "0")])
            .output()
            .unwrap();
        (o.status.code(), common::stderr(&o))
    };
    for (extra, code, says) in [
        (&["--dist-init", &rendezvous][..], 1, "--features nccl"),
        (
            &["--dist", "mpi", "--dist-init", &rendezvous][..],
            1,
            "MPI joins its ranks itself",
        ),
        (
            &["--dist-init", "tcp://10.0.0.1:29500"][..],
            2,
            "give file://PATH",
        ),
    ] {
        let (got, err) = adapt(extra);
        assert_eq!(got, Some(code), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        if code == 1 {
            assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A tensor's f32 values as bits.
fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// The jobs under `mpirun`.
#[cfg(feature = "mpi")]
mod under_mpirun {
    use std::collections::HashMap;
    use std::path::Path;
    use std::process::{Command, Output};
    use std::time::{Duration, Instant};

    use candle_core::{Device, Tensor};

    use super::bits;
    use crate::common::{self, fixture_dir, make_dataset};

    /// `wesam <args>` as one process, or as `ranks` ranks under `mpirun`.
    fn wesam<S: AsRef<std::ffi::OsStr>>(ranks: usize, args: &[S]) -> Command {
        let bin = env!("CARGO_BIN_EXE_wesam");
        let mut c = if ranks == 1 {
            Command::new(bin)
        } else {
            let mut c = Command::new("mpirun");
            // Root in containers; more ranks than cores on small CI machines.
            c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
                .arg(ranks.to_string())
                .arg(bin);
            c
        };
        c.args(args);
        c
    }

    fn run(mut c: Command) -> Output {
        let o = c
            .output()
            .expect("cannot start mpirun: install Open MPI (openmpi-bin)");
        assert!(o.status.success(), "{}", common::stderr(&o));
        o
    }

    /// The arguments of a short `wesam <command>` run on `data` into `out`.
    fn training(command: &str, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
        let model = fixture_dir().join("model.safetensors");
        let mut args = vec![
            command,
            "--dataset",
            data.to_str().unwrap(),
            "--checkpoint",
            model.to_str().unwrap(),
            "--prompt",
            "box",
            "--loss-resolution",
            "low",
            "--lr",
            "1e-2",
            "--select",
            "last",
            "--eval-limit",
            "1",
            "--checkpoint-every",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        if !extra.contains(&"--epochs") {
            args.extend_from_slice(&["--epochs", "2"]);
        }
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    }

    fn tensors(path: &Path) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    /// Every tensor of `a` equals `b`'s bit for bit.
    fn assert_same_bits(what: &str, a: &Path, b: &Path) {
        let (a, b) = (tensors(a), tensors(b));
        assert_eq!(a.len(), b.len(), "{what}: tensor count");
        for (k, x) in &a {
            assert!(bits(x) == bits(&b[k]), "{what}: {k} differs");
        }
    }

    #[test]
    fn two_ranks_train_as_one_process_with_their_global_batch_bit_for_bit() {
        let root = common::scratch();
        let data = root.path().join("data");
        make_dataset(&data, 8);
        let at = |name: &str| root.path().join(name);

        // LoRA self-training: 2 ranks × 1 image, twice, and 1 process × 2 images.
        let (a, b, one) = (at("np2-a"), at("np2-b"), at("np1"));
        run(wesam(
            2,
            &training("adapt", &data, &a, &["--batch-size", "1"]),
        ));
        run(wesam(
            2,
            &training("adapt", &data, &b, &["--batch-size", "1"]),
        ));
        run(wesam(
            1,
            &training("adapt", &data, &one, &["--batch-size", "2"]),
        ));
        let (a_lora, one_lora) = (
            a.join("adapter.safetensors"),
            one.join("adapter.safetensors"),
        );
        assert_same_bits("two -np 2 runs", &a_lora, &b.join("adapter.safetensors"));
        assert_same_bits("-np 2 against one process", &a_lora, &one_lora);
        // The weights did train (LoRA's B starts at zero): the runs are not equal by standing still.
        assert!(tensors(&one_lora)
            .iter()
            .any(|(k, t)| k.contains("lora_b") && common::max_abs(t) > 0.0));

        // Supervised training of the decoder with the balanced BCE, whose pixel counts are pooled
        // over the whole batch: 2 ranks × 2 images against 1 process × 4.
        let extra2 = [
            "--trainable",
            "decoder",
            "--loss",
            "balanced-bce",
            "--batch-size",
            "2",
        ];
        let extra4 = [
            "--trainable",
            "decoder",
            "--loss",
            "balanced-bce",
            "--batch-size",
            "4",
        ];
        let (t2, t1) = (at("train-np2"), at("train-np1"));
        run(wesam(2, &training("train", &data, &t2, &extra2)));
        run(wesam(1, &training("train", &data, &t1, &extra4)));
        assert_same_bits(
            "train -np 2 against one process",
            &t2.join("merged.safetensors"),
            &t1.join("merged.safetensors"),
        );
        let config = std::fs::read_to_string(t2.join("config.toml")).unwrap();
        assert!(config.contains("ranks = 2"), "{config}");
    }

    #[test]
    fn a_job_resumed_under_mpirun_after_a_crash_ends_where_an_uninterrupted_one_ends() {
        let root = common::scratch();
        let data = root.path().join("data");
        make_dataset(&data, 8);
        let (full, crashed) = (root.path().join("full"), root.path().join("crashed"));
        let flags = ["--batch-size", "1"];
        run(wesam(2, &training("adapt", &data, &full, &flags)));

        // 7 training images in batches of 2: a checkpoint after step 2, a crash after step 3.
        let mut crash = flags.to_vec();
        crash.extend_from_slice(&["--crash-after-steps", "3"]);
        let o = wesam(2, &training("adapt", &data, &crashed, &crash))
            .output()
            .unwrap();
        assert!(!o.status.success(), "the crash did not stop the job");
        assert!(!crashed.join("adapter.safetensors").exists());
        let resume = ["adapt", "--resume", crashed.to_str().unwrap()];
        run(wesam(2, &resume));
        assert_same_bits(
            "resumed against uninterrupted",
            &crashed.join("adapter.safetensors"),
            &full.join("adapter.safetensors"),
        );

        // The run's batches need its number of ranks.
        let o = wesam(1, &resume).output().unwrap();
        assert!(!o.status.success());
        assert!(
            common::stderr(&o).contains("run of 2 ranks"),
            "{}",
            common::stderr(&o)
        );
    }

    /// The pids of this test's `wesam` ranks (their command lines name `out`).
    fn ranks_of(out: &Path) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|a| a.ends_with("/wesam"))
                && args.iter().any(|a| Path::new(a) == out)
            {
                pids.push(pid);
            }
        }
        pids
    }

    #[test]
    fn a_rank_that_dies_ends_the_job_within_a_bounded_time() {
        let root = common::scratch();
        let data = root.path().join("data");
        make_dataset(&data, 8);
        let out = root.path().join("killed");
        let mut job = wesam(2, &training("adapt", &data, &out, &["--epochs", "1000"]))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let victim = loop {
            let pids = ranks_of(&out);
            if pids.len() == 2 && out.join("config.toml").exists() {
                break pids[1];
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the ranks never started"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap();
        let killed = Instant::now();
        let status = loop {
            if let Some(status) = job.try_wait().unwrap() {
                break status;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                job.kill().unwrap();
                panic!("the job still runs a minute after one of its ranks died");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!status.success());
        assert!(ranks_of(&out).is_empty(), "a rank outlived the job");
    }
}
