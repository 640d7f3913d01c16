//! `wesam data check` and `wesam eval` on the real datasets in `../shared/data` (next to the project, see its
//! README): Kvasir-SEG by name, CVC-ClinicDB-256 and isbi2012-em as folders. A clone without
//! that folder skips these tests, saying so.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `../shared/data/<name>`, or `None` (with the reason printed) when it is absent.
fn shared(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name);
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} is absent (real data lives there)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// Runs `wesam ARGS [--data-root ROOT]`, which must succeed, and parses its JSON output.
fn wesam_json(args: &[&str], root: Option<&PathBuf>) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wesam"));
    cmd.args(args);
    if let Some(root) = root {
        cmd.arg("--data-root").arg(root);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn data_check(dataset: &str, root: Option<&PathBuf>) -> Value {
    wesam_json(&["data", "check", "--json", "--dataset", dataset], root)
}

fn splits(report: &Value) -> [u64; 3] {
    ["train", "val", "test"].map(|s| report["splits"][s].as_u64().unwrap())
}

/// The reasons given for skipped or suspicious files.
fn reasons(report: &Value) -> Vec<String> {
    report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kvasir_seg_has_1000_images_split_834_to_166() {
    let Some(root) = shared("Kvasir-SEG") else {
        return;
    };
    let report = data_check("kvasir", Some(&root));
    assert_eq!(report["images"], 1000);
    assert_eq!(splits(&report), [834, 0, 166]);
    // one connected component per polyp at least; the only suspicious files are masks with
    // specks of a few pixels beside the polyp
    assert!(report["instances"].as_u64().unwrap() >= 1000);
    assert!(
        reasons(&report).iter().all(|r| r.contains("is tiny")),
        "{:?}",
        reasons(&report)
    );
}

#[test]
fn cvc_clinicdb_is_a_folder_of_609_binary_masks() {
    let Some(root) = shared("CVC-ClinicDB-256") else {
        return;
    };
    let report = data_check(root.to_str().unwrap(), None);
    assert_eq!(report["images"], 609);
    assert_eq!(report["instances"], 609);
    assert_eq!(splits(&report), [508, 0, 101]);
    assert_eq!(report["skipped"], Value::Array(Vec::new()));
}

#[test]
fn isbi2012_instance_ids_become_instances() {
    let Some(root) = shared("isbi2012-em") else {
        return;
    };
    let report = data_check(root.to_str().unwrap(), None);
    assert_eq!(report["images"], 30);
    assert_eq!(report["instances"], 3431);
    assert_eq!(splits(&report), [25, 0, 5]);
}

/// `wesam eval --json` of the tiny random SAM on the first images of a dataset's test split.
fn eval(dataset: &str, root: Option<&PathBuf>, prompt: &str, limit: usize) -> Value {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/model.safetensors");
    let limit = limit.to_string();
    let args = [
        "eval",
        "--json",
        "--prompt",
        prompt,
        "--limit",
        &limit,
        "--dataset",
        dataset,
    ];
    let mut args = args.to_vec();
    args.extend(["--checkpoint", model.to_str().unwrap()]);
    wesam_json(&args, root)
}

#[test]
fn eval_runs_on_kvasir_cvc_and_coco() {
    let cases = [
        ("kvasir", shared("Kvasir-SEG").map(Some), "box"),
        ("coco", shared("coco-val2017-tiny").map(Some), "point"),
    ];
    for (name, root, prompt) in cases {
        let Some(root) = root else { continue };
        let r = eval(name, root.as_ref(), prompt, 3);
        assert_eq!(r["images"], 3, "{name}: {r}");
        assert!(r["instances"].as_u64().unwrap() >= 3);
        for k in ["miou", "dice", "biou"] {
            let v = r[k].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&v), "{name} {k} = {v}");
        }
    }
    if let Some(cvc) = shared("CVC-ClinicDB-256") {
        let r = eval(cvc.to_str().unwrap(), None, "coarse-mask", 3);
        assert_eq!(
            (r["images"].as_u64(), r["instances"].as_u64()),
            (Some(3), Some(3))
        );
    }
}
