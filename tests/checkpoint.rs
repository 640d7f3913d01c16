//! Loading and saving weights: every supported format gives the same model, a wrong file is an
//! error that names the file and what is wrong, and saved weights load back without flags.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{assert_close, cases, fixture_dir};
use wesam::model::checkpoint::{infer_config, random_state_dict, write_safetensors, StateDict};
use wesam::model::{Lora, ModelType, Sam, SamConfig};

fn tiny_state() -> StateDict {
    StateDict::load(&fixture_dir().join("model.safetensors"), &Device::Cpu).unwrap()
}

fn embed_of(path: &std::path::Path, architecture: Option<&SamConfig>) -> Tensor {
    let sam = Sam::load(path, architecture, None, &Device::Cpu).unwrap();
    sam.encode(&cases()["image"], None).unwrap()
}

#[test]
fn pytorch_checkpoint_loads_like_the_safetensors() {
    let pth = fixture_dir().join("model.pth");
    // A plain torch.save(state_dict) has no configuration, and the tiny model is no official
    // type: its decoder's head count (2) is in no shape, so it is refused without one given.
    let state = StateDict::load(&pth, &Device::Cpu).unwrap();
    assert!(state.config.is_none());
    let err = format!("{:#}", state.resolve_config(None).unwrap_err());
    assert!(
        err.contains("model.pth") && err.contains("--model-config"),
        "{err}"
    );
    let expected = tiny_state().config.unwrap();
    assert_eq!(state.resolve_config(Some(&expected)).unwrap(), expected);
    let mut inferred = infer_config(&state.tensors).unwrap();
    assert_eq!(inferred.decoder_num_heads, 8, "the shapes' guess is wrong");
    inferred.decoder_num_heads = expected.decoder_num_heads;
    assert_eq!(inferred, expected);
    let safetensors = tiny_state();
    assert_eq!(state.tensors.len(), safetensors.tensors.len());
    for (k, t) in &safetensors.tensors {
        assert_close(k, &state.tensors[k], t, 0.0);
    }
}

#[test]
fn huggingface_layout_loads_with_official_names() {
    let hf = StateDict::load(&fixture_dir().join("model_hf.safetensors"), &Device::Cpu).unwrap();
    let official = tiny_state();
    let a: std::collections::BTreeSet<_> = hf.tensors.keys().collect();
    let b: std::collections::BTreeSet<_> = official.tensors.keys().collect();
    assert_eq!(
        a.symmetric_difference(&b).collect::<Vec<_>>(),
        Vec::<&&String>::new()
    );
    assert_close(
        "hf embed",
        &embed_of(
            &fixture_dir().join("model_hf.safetensors"),
            official.config.as_ref(),
        ),
        &cases()["embed"],
        1e-4,
    );
}

/// An official checkpoint (as released: no configuration stored) is recognised exactly by its
/// shapes, so it needs no flag.
#[test]
fn official_types_are_detected_from_shapes() {
    let t = ModelType::VitB;
    let state = StateDict {
        tensors: random_state_dict(&SamConfig::official(t), 0, &Device::Cpu).unwrap(),
        config: None,
        path: "sam_vit_b_01ec64.pth".into(),
    };
    assert_eq!(infer_config(&state.tensors).unwrap().model_type(), Some(t));
    assert_eq!(state.resolve_config(None).unwrap(), SamConfig::official(t));
    // A released SAM-Adapter checkpoint of that size: no prompt layers but `no_mask_embed` and
    // `pe_layer`, and the adapter's keys. It is the official ViT-B with the adapter, read with
    // the released code's F_pe layout.
    let mut tensors = state.tensors;
    tensors.retain(|k, _| {
        !k.starts_with("prompt_encoder.")
            || k.ends_with("no_mask_embed.weight")
            || k.ends_with("positional_encoding_gaussian_matrix")
    });
    let official = SamConfig::official(t);
    tensors.extend(wesam::model::sam_adapter::initial_weights(&official, 0, &Device::Cpu).unwrap());
    let released = StateDict {
        tensors,
        config: None,
        path: "sam_adapter_vit_b.pth".into(),
    };
    assert_eq!(
        released.resolve_config(None).unwrap(),
        SamConfig {
            sam_adapter: Some(wesam::model::sam_adapter::FpeLayout::Faithful),
            ..official
        }
    );
}

fn write_tmp(
    dir: &std::path::Path,
    name: &str,
    tensors: HashMap<String, Tensor>,
    with_config: bool,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut v: Vec<_> = tensors.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = if with_config {
        let cfg = serde_json::to_string(&tiny_state().config.unwrap()).unwrap();
        HashMap::from([("wesam.config".to_string(), cfg)])
    } else {
        HashMap::new()
    };
    write_safetensors(&path, &v, meta).unwrap();
    path
}

#[test]
fn wrong_checkpoint_names_file_keys_and_shapes() {
    let mut t = tiny_state().tensors;
    t.remove("mask_decoder.iou_token.weight").unwrap();
    t.remove("image_encoder.blocks.1.norm2.bias").unwrap();
    t.insert(
        "image_encoder.head.weight".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    t.insert(
        "image_encoder.pos_embed".into(),
        Tensor::zeros((1, 4, 4, 48), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = common::scratch();
    let path = write_tmp(dir.path(), "broken.safetensors", t, true);
    let err = match Sam::load(&path, None, None, &Device::Cpu) {
        Ok(_) => panic!("a broken checkpoint loaded"),
        Err(e) => format!("{e:#}"),
    };
    for needle in [
        "broken.safetensors",
        "2 missing keys",
        "mask_decoder.iou_token.weight",
        "image_encoder.blocks.1.norm2.bias",
        "1 unexpected keys: image_encoder.head.weight",
        "image_encoder.pos_embed: checkpoint [1, 4, 4, 48], model [1, 8, 8, 48]",
    ] {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
}

#[test]
fn a_file_that_is_no_checkpoint_is_an_error_naming_it() {
    let file = tempfile::Builder::new()
        .prefix("wesam-not-a-model-")
        .suffix(".pth")
        .tempfile()
        .unwrap();
    let path = file.path().to_path_buf();
    std::fs::write(&path, b"hello, this is text").unwrap();
    let err = format!(
        "{:#}",
        Sam::load(&path, None, None, &Device::Cpu).err().unwrap()
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    let missing = std::path::Path::new("/nonexistent/sam.pth");
    let err = format!(
        "{:#}",
        Sam::load(missing, None, None, &Device::Cpu).err().unwrap()
    );
    assert!(
        err.contains("/nonexistent/sam.pth") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn saved_weights_load_back_without_flags() {
    let sam = Sam::load(
        &fixture_dir().join("model.safetensors"),
        None,
        None,
        &Device::Cpu,
    )
    .unwrap();
    let root = common::scratch();
    let dir = root.path().join("save");
    let path = dir.join("saved.safetensors");
    sam.save(&path, None).unwrap();
    assert!(
        !dir.join(".saved.safetensors.tmp").exists(),
        "temporary file left behind"
    );
    let back = StateDict::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.config.as_ref(), Some(&sam.config));
    assert_close(
        "reloaded embed",
        &embed_of(&path, None),
        &cases()["embed"],
        1e-4,
    );
}

#[test]
fn merged_weights_are_base_plus_ba_and_equal_the_adapted_model() {
    let dev = Device::Cpu;
    let sam = Sam::load(&fixture_dir().join("model.safetensors"), None, None, &dev).unwrap();
    let lora = Lora::load(&fixture_dir().join("lora.safetensors"), &sam.config, &dev).unwrap();
    let merged = sam.merged_weights(Some(&lora)).unwrap();
    let d = sam.config.encoder_embed_dim;
    for i in 0..sam.config.encoder_depth {
        let key = format!("image_encoder.blocks.{i}.attn.qkv.weight");
        let base = &sam.weights[&key];
        let l = lora.block(i).unwrap();
        let ba = |b: &Tensor, a: &Tensor| b.matmul(a).unwrap();
        let expect_q = (base.narrow(0, 0, d).unwrap() + ba(&l.b_q, &l.a_q)).unwrap();
        let expect_v = (base.narrow(0, 2 * d, d).unwrap() + ba(&l.b_v, &l.a_v)).unwrap();
        assert_close(
            &format!("{key} q"),
            &merged[&key].narrow(0, 0, d).unwrap(),
            &expect_q,
            1e-6,
        );
        assert_close(
            &format!("{key} k"),
            &merged[&key].narrow(0, d, d).unwrap(),
            &base.narrow(0, d, d).unwrap(),
            0.0,
        );
        assert_close(
            &format!("{key} v"),
            &merged[&key].narrow(0, 2 * d, d).unwrap(),
            &expect_v,
            1e-6,
        );
    }
    let dir = common::scratch();
    let path = dir.path().join("merged.safetensors");
    sam.save(&path, Some(&lora)).unwrap();
    assert_close(
        "merged embed",
        &embed_of(&path, None),
        &cases()["embed_lora"],
        1e-4,
    );
    check_merged_with_official_python(&path);
}

/// The official PyTorch `Sam` loads the merged file with `strict=True` and gives the adapted
/// logits; needs python3 with torch and segment_anything, skipped with a note otherwise.
fn check_merged_with_official_python(path: &std::path::Path) {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import torch, segment_anything, safetensors"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping the official-loader check: python3 with torch and segment_anything is not installed");
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_parity_fixture.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--check-merged")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "official loader rejected the merged weights: {text}"
    );
}
