//! `wesam export`: the PyTorch checkpoint it writes holds exactly the tensors `Sam::save` writes,
//! wesam and candle read it back bit for bit, the official PyTorch `Sam` loads it with
//! `torch.load(weights_only=True)` and `strict=True` (when a Python with torch and
//! segment_anything is at hand), and it never writes over a file it was not told to.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{fixture_dir, scratch, stderr, wesam};
use wesam::model::{Sam, StateDict};

/// A tensor's elements as little-endian bytes: equal bytes, equal bits.
fn bytes(t: &Tensor) -> Vec<u8> {
    let mut b = Vec::new();
    t.write_bytes(&mut b).unwrap();
    b
}

/// Asserts that two sets of tensors have the same names, dtypes, shapes and bits.
fn assert_identical(expected: &HashMap<String, Tensor>, actual: &HashMap<String, Tensor>) {
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    let mut actual_names: Vec<&String> = actual.keys().collect();
    actual_names.sort();
    assert_eq!(names, actual_names);
    for name in names {
        let (e, a) = (&expected[name], &actual[name]);
        assert_eq!(e.dtype(), a.dtype(), "{name}");
        assert_eq!(e.dims(), a.dims(), "{name}");
        assert!(bytes(e) == bytes(a), "{name}: values differ");
    }
}

fn read_pth(path: &Path) -> HashMap<String, Tensor> {
    candle_core::pickle::read_all(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn read_safetensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Runs `wesam export` and asserts it succeeded.
fn export(args: &[&str]) {
    let o = wesam(&[&["export"], args].concat());
    assert!(o.status.success(), "export {args:?}: {}", stderr(&o));
}

fn provenance(out: &Path) -> serde_json::Value {
    let path = PathBuf::from(format!("{}.provenance.json", out.display()));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tiny_model() -> PathBuf {
    fixture_dir().join("model.safetensors")
}

#[test]
fn a_pth_export_holds_the_fixture_weights_bit_for_bit() {
    let dir = scratch();
    let out = dir.path().join("tiny.pth");
    let model = tiny_model();
    export(&[
        "--checkpoint",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "pth",
    ]);
    let source = read_safetensors(&model);
    assert_identical(&source, &read_pth(&out));
    // The .pth stores no configuration (configs/sam-tiny.toml is another architecture than the
    // fixture's): wesam reads it with the fixture's own.
    let config = StateDict::load(&model, &Device::Cpu)
        .unwrap()
        .config
        .unwrap();
    let sam = Sam::load(&out, Some(&config), None, &Device::Cpu).unwrap();
    assert_identical(&source, &sam.weights);
    let p = provenance(&out);
    assert_eq!(
        p["checkpoint"],
        serde_json::json!(wesam::io::resolved(&model))
    );
    assert_eq!(p["lora"], serde_json::Value::Null);
    assert_eq!(p["adapter"], "none");
    assert_eq!(p["model_type"], "custom");
    assert_eq!(p["format"], "pth");
    assert_eq!(p["wesam_version"], env!("CARGO_PKG_VERSION"));
}

/// With a LoRA adapter and for a prompt-free SAM-Adapter model (released names), the .pth holds
/// the same tensors as the safetensors `Sam::save` writes.
#[test]
fn pth_and_safetensors_exports_hold_the_same_tensors() {
    let dir = scratch();
    let lora = fixture_dir().join("lora.safetensors");
    let tiny = tiny_model();
    let sam_adapter = fixture_dir().join("../sam_adapter/model.safetensors");
    let cases: [(&str, &Path, Option<&Path>, &str); 2] = [
        ("lora", &tiny, Some(&lora), "lora"),
        ("adapter", &sam_adapter, None, "sam-adapter"),
    ];
    for (label, checkpoint, lora, adapter) in cases {
        let mut args = vec!["--checkpoint", checkpoint.to_str().unwrap()];
        if let Some(l) = lora {
            args.extend(["--lora", l.to_str().unwrap()]);
        }
        let pth = dir.path().join(format!("{label}.pth"));
        let st = dir.path().join(format!("{label}.safetensors"));
        for (out, format) in [(&pth, "pth"), (&st, "safetensors")] {
            export(
                &[
                    &args[..],
                    &["--out", out.to_str().unwrap(), "--format", format],
                ]
                .concat(),
            );
            assert_eq!(provenance(out)["adapter"], adapter, "{label}");
            assert_eq!(provenance(out)["format"], format, "{label}");
        }
        let saved = read_safetensors(&st);
        assert_identical(&saved, &read_pth(&pth));
        if lora.is_some() {
            // The adapter changed the weights: the export is not a copy of the base.
            let base = read_safetensors(checkpoint);
            assert!(base.iter().any(|(k, t)| bytes(t) != bytes(&saved[k])));
        } else {
            assert!(saved.contains_key("no_mask_embed.weight"), "released names");
        }
    }
}

#[test]
fn an_existing_output_or_the_input_itself_is_never_written_over() {
    let dir = scratch();
    let model = dir.path().join("model.safetensors");
    std::fs::copy(tiny_model(), &model).unwrap();
    let out = dir.path().join("kept.pth");
    std::fs::write(&out, b"user data").unwrap();
    let run = |out: &Path, force: bool| {
        let mut args = vec![
            "export",
            "--checkpoint",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        wesam(&args)
    };
    let o = run(&out, false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"user data");
    // A provenance file left from another export is kept too.
    let fresh = dir.path().join("fresh.pth");
    let stale = dir.path().join("fresh.pth.provenance.json");
    std::fs::write(&stale, b"{}").unwrap();
    let o = run(&fresh, false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!fresh.exists());
    assert_eq!(std::fs::read(&stale).unwrap(), b"{}");
    // The checkpoint being read, even with --force and through another spelling of its path.
    let same = dir.path().join(".").join("model.safetensors");
    let o = run(&same, true);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--checkpoint"), "{}", stderr(&o));
    assert_identical(&read_safetensors(&tiny_model()), &read_safetensors(&model));
    // --force writes over the file.
    let o = run(&out, true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_identical(&read_safetensors(&model), &read_pth(&out));
}

/// The Python that runs the official check: `WESAM_TORCH_PYTHON`, else `python3`.
fn torch_python() -> String {
    std::env::var("WESAM_TORCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `torch.load(weights_only=True)` returns the state dict with every tensor of the source bit
/// for bit, and the official `Sam` built for the fixture's architecture loads it with
/// `strict=True`.
const OFFICIAL_CHECK: &str = r#"
import sys
import torch
from safetensors.torch import load_file
sys.path.insert(0, sys.argv[1])
from make_parity_fixture import TINY_CONFIG, build_sam

exported, source = sys.argv[2], sys.argv[3]
sd = torch.load(exported, weights_only=True)
assert type(sd).__name__ == "OrderedDict", type(sd)
ref = load_file(source)
assert list(sd) == sorted(ref), "names or order differ"
for k, v in ref.items():
    t = sd[k]
    assert isinstance(t, torch.Tensor), k
    assert t.dtype == v.dtype and t.shape == v.shape, (k, t.dtype, t.shape, v.dtype, v.shape)
    assert t.stride() == v.contiguous().stride(), (k, t.stride())
    assert torch.equal(t.reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
sam = build_sam(TINY_CONFIG)
sam.load_state_dict(sd, strict=True)
print(f"torch {torch.__version__} loaded {len(sd)} tensors; official Sam strict load ok")
"#;

#[test]
fn torch_loads_the_export_into_the_official_sam() {
    let python = torch_python();
    let probe = std::process::Command::new(&python)
        .args([
            "-c",
            "import torch, segment_anything, safetensors, torchvision",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            let why = why.trim().lines().last().unwrap_or("no message");
            eprintln!(
                "skipping the torch.load check: `{python}` cannot import torch, segment_anything, \
                 safetensors and torchvision ({why}); set WESAM_TORCH_PYTHON to a Python that can"
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "skipping the torch.load check: cannot run `{python}` ({e}); set \
                 WESAM_TORCH_PYTHON to a Python with torch and segment_anything"
            );
            return;
        }
    }
    let dir = scratch();
    let out = dir.path().join("sam_tiny.pth");
    let model = tiny_model();
    export(&[
        "--checkpoint",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let o = std::process::Command::new(&python)
        .arg("-c")
        .arg(OFFICIAL_CHECK)
        .arg(&scripts)
        .arg(&out)
        .arg(&model)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{text}");
    assert!(o.status.success(), "torch rejected the export: {text}");

    // A detectron2-style EBSeg checkpoint (tensors under "model", an iteration count beside):
    // the ebseg export reads it and torch reads the result.
    let ebseg = dir.path().join("ebseg.pth");
    let ebseg_out = dir.path().join("ebseg_adapted.pth");
    let python_run = |code: &str, args: &[&Path]| {
        let o = std::process::Command::new(&python)
            .arg("-c")
            .arg(code)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
    };
    python_run(EBSEG_MAKE, &[&model, &ebseg]);
    export(&[
        "--checkpoint",
        model.to_str().unwrap(),
        "--format",
        "ebseg",
        "--ebseg-checkpoint",
        ebseg.to_str().unwrap(),
        "--out",
        ebseg_out.to_str().unwrap(),
    ]);
    python_run(EBSEG_CHECK, &[&model, &ebseg, &ebseg_out]);
}

/// An EBSeg-like detectron2 checkpoint from a model's encoder: `backbone.*` (no neck) with
/// every value doubled, a head tensor, and an iteration count.
const EBSEG_MAKE: &str = r#"
import sys, torch
from safetensors.torch import load_file
ref = load_file(sys.argv[1])
model = {"backbone." + k[len("image_encoder."):]: v * 2 for k, v in ref.items()
         if k.startswith("image_encoder.") and not k.startswith("image_encoder.neck.")}
model["sem_seg_head.weight"] = torch.ones(3)
torch.save({"model": model, "iteration": 7}, sys.argv[2])
"#;

/// torch reads the ebseg export: the encoder's tensors under `backbone.*` (EBSeg's position
/// embedding kept), the head kept.
const EBSEG_CHECK: &str = r#"
import sys, torch
from safetensors.torch import load_file
ref, base = load_file(sys.argv[1]), torch.load(sys.argv[2], weights_only=True)["model"]
out = torch.load(sys.argv[3], weights_only=True)
assert set(out) == set(base), set(out) ^ set(base)
for k, v in out.items():
    if k.startswith("backbone.") and k != "backbone.pos_embed":
        assert torch.equal(v, ref["image_encoder." + k[len("backbone."):]]), k
    else:
        assert torch.equal(v, base[k]), k
print(f"ebseg export: {len(out)} tensors read by torch")
"#;

/// `--format ebseg` writes the adapted encoder (LoRA folded in, no neck) under EBSeg's
/// `backbone.*` names into a copy of an EBSeg checkpoint, keeping the checkpoint's other tensors
/// and, unless `--pos-embed adapted`, its trained position embedding.
#[test]
fn an_ebseg_export_replaces_the_backbone() {
    let root = scratch();
    let model = tiny_model();
    let merged: HashMap<String, Tensor> = {
        let out = root.path().join("merged.pth");
        let lora = fixture_dir().join("lora.safetensors");
        export(&[
            "--checkpoint",
            model.to_str().unwrap(),
            "--lora",
            lora.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        read_pth(&out)
    };
    // An EBSeg-like checkpoint: the base encoder doubled under backbone.*, and a head.
    let mut base: Vec<(String, Tensor)> = merged
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("image_encoder.")?;
            (!rest.starts_with("neck.")).then(|| (format!("backbone.{rest}"), (v * 2.0).unwrap()))
        })
        .collect();
    base.push((
        "sem_seg_head.weight".into(),
        Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    ));
    base.sort_by(|a, b| a.0.cmp(&b.0));
    let ebseg = root.path().join("ebseg.pth");
    wesam::model::torch_pth::write_pth(&ebseg, &base).unwrap();
    let lora = fixture_dir().join("lora.safetensors");
    let run = |out: &Path, extra: &[&str]| {
        let args = [
            &[
                "--checkpoint",
                model.to_str().unwrap(),
                "--lora",
                lora.to_str().unwrap(),
                "--format",
                "ebseg",
                "--ebseg-checkpoint",
                ebseg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ][..],
            extra,
        ]
        .concat();
        export(&args);
        read_pth(out)
    };
    let kept = run(&root.path().join("kept.pth"), &[]);
    assert_eq!(kept.len(), base.len());
    let qkv = "blocks.0.attn.qkv.weight";
    assert!(
        bytes(&kept[&format!("backbone.{qkv}")]) == bytes(&merged[&format!("image_encoder.{qkv}")]),
        "the adapted encoder"
    );
    let base: HashMap<String, Tensor> = base.into_iter().collect();
    assert!(
        bytes(&kept["backbone.pos_embed"]) == bytes(&base["backbone.pos_embed"]),
        "EBSeg's position embedding"
    );
    assert!(bytes(&kept["sem_seg_head.weight"]) == bytes(&base["sem_seg_head.weight"]));
    assert!(!kept.keys().any(|k| k.contains("neck")));
    let adapted = run(
        &root.path().join("adapted.pth"),
        &["--pos-embed", "adapted"],
    );
    assert!(bytes(&adapted["backbone.pos_embed"]) == bytes(&merged["image_encoder.pos_embed"]));

    // A checkpoint of another backbone is refused, naming what is missing.
    let other = root.path().join("other.pth");
    wesam::model::torch_pth::write_pth(
        &other,
        &[(
            "backbone.pos_embed".into(),
            Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )],
    )
    .unwrap();
    let o = wesam(&[
        "export",
        "--checkpoint",
        model.to_str().unwrap(),
        "--format",
        "ebseg",
        "--ebseg-checkpoint",
        other.to_str().unwrap(),
        "--out",
        root.path().join("x.pth").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no backbone."), "{}", stderr(&o));
}
