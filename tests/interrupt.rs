//! A run stopped by a signal: SIGTERM (what schedulers and `kill` send) and SIGINT (Ctrl-C) both
//! end the run after the current step with a checkpoint that `--resume` continues, and exit 130.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::make_dataset;

#[test]
fn sigterm_and_sigint_checkpoint_and_exit_130() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let root = common::scratch();
        let data = root.path().join("data");
        make_dataset(&data, 12);
        let out = root.path().join("run");
        let model = common::fixture_dir().join("model.safetensors");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wesam"))
            .args(["adapt", "--checkpoint", model.to_str().unwrap()])
            .args(["--dataset", data.to_str().unwrap(), "--epochs", "200"])
            .args([
                "--checkpoint-every",
                "100000",
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The configuration is written when training starts, after the handler is set.
        let start = Instant::now();
        while !out.join("config.toml").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the run never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: `kill` sends a signal to the child's pid, which `child` keeps unreaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "signal {signal}: {status:?}");
        assert!(
            out.join("checkpoint.safetensors").exists(),
            "signal {signal}: no checkpoint"
        );
    }
}

/// Ctrl-C during a long evaluation stops it before the next image (not after the whole split),
/// reports how far it got instead of scores, and exits 130.
#[test]
fn an_interrupted_evaluation_stops_before_the_next_image() {
    let root = common::scratch();
    let data = root.path().join("data");
    let n = 400;
    make_dataset(&data, n);
    let masks = root.path().join("masks");
    let model = common::fixture_dir().join("model.safetensors");
    let child = Command::new(env!("CARGO_BIN_EXE_wesam"))
        .args(["eval", "--checkpoint", model.to_str().unwrap()])
        .args(["--dataset", data.to_str().unwrap(), "--split", "all"])
        .args(["--save-masks", masks.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Predicted masks written (each image also gets an overlay, and temporary names).
    let written = || {
        std::fs::read_dir(&masks).map_or(0, |d| {
            d.filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.') && !name.contains("_overlay")
            })
            .count()
        })
    };
    while written() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the evaluation never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: `kill` sends a signal to the child's pid, which `child` keeps unreaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted after"), "{err}");
    let done = written();
    assert!(done < n, "every image was evaluated: {err}");
    assert!(
        err.contains(&format!("interrupted after {done} of {n}")),
        "{err}"
    );
}
