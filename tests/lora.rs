//! LoRA adapters: initialisation, the anchor (the model without adapters) untouched by them,
//! adapter files round-trip and reject what does not fit.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, cases, fixture_dir, max_abs};
use wesam::model::{Lora, LoraConfig, ModelType, Sam, SamConfig};

#[test]
fn fresh_adapters_follow_the_reference_init_and_count() {
    let cfg = SamConfig::official(ModelType::VitB);
    let lora = Lora::new(&cfg, &LoraConfig::default(), 0, &Device::Cpu).unwrap();
    assert_eq!(lora.num_params(), 147_456);
    let bound = 1.0 / (768f32).sqrt();
    for (name, v) in lora.named_vars() {
        let m = max_abs(v.as_tensor());
        if name.contains("lora_a") {
            assert!(
                m > 0.5 * bound && m <= bound,
                "{name}: max {m} vs bound {bound}"
            );
        } else {
            assert_eq!(m, 0.0, "{name} must start at zero");
        }
    }
    let some = LoraConfig {
        rank: 8,
        scale: 0.5,
        blocks: vec![0, 11],
    };
    let lora = Lora::new(&cfg, &some, 0, &Device::Cpu).unwrap();
    assert!(lora.block(0).is_some() && lora.block(5).is_none() && lora.block(11).is_some());
    assert_eq!(lora.num_params(), 2 * 2 * (768 * 8 * 2));
    assert!(Lora::new(
        &cfg,
        &LoraConfig {
            blocks: vec![12],
            ..Default::default()
        },
        0,
        &Device::Cpu
    )
    .is_err());
    // The initialisation is a function of the seed.
    let again = Lora::new(&cfg, &some, 0, &Device::Cpu).unwrap();
    let other = Lora::new(&cfg, &some, 1, &Device::Cpu).unwrap();
    let a = |l: &Lora| l.named_vars()[0].1.as_tensor().clone();
    assert_close("same seed", &a(&lora), &a(&again), 0.0);
    assert!(common::max_abs_diff(&a(&lora), &a(&other)) > 0.0);
}

#[test]
fn fresh_adapters_leave_outputs_unchanged_and_the_anchor_ignores_them() {
    let dev = Device::Cpu;
    let sam = Sam::load(&fixture_dir().join("model.safetensors"), None, None, &dev).unwrap();
    let c = cases();
    let fresh = Lora::new(&sam.config, &LoraConfig::default(), 0, &dev).unwrap();
    assert_close(
        "fresh adapters",
        &sam.encode(&c["image"], Some(&fresh)).unwrap(),
        &c["embed"],
        1e-5,
    );
    // Changing the adapters changes the adapted model, never the anchor.
    let trained = Lora::load(&fixture_dir().join("lora.safetensors"), &sam.config, &dev).unwrap();
    for (_, v) in fresh.named_vars() {
        v.set(&Tensor::ones(v.shape(), v.dtype(), &dev).unwrap())
            .unwrap();
    }
    assert!(
        common::max_abs_diff(&sam.encode(&c["image"], Some(&fresh)).unwrap(), &c["embed"]) > 1e-2
    );
    assert_close(
        "anchor",
        &sam.encode(&c["image"], None).unwrap(),
        &c["embed"],
        1e-4,
    );
    assert_close(
        "trained",
        &sam.encode(&c["image"], Some(&trained)).unwrap(),
        &c["embed_lora"],
        1e-4,
    );
}

#[test]
fn adapter_files_round_trip_and_mismatches_are_named() {
    let dev = Device::Cpu;
    let sam = Sam::load(&fixture_dir().join("model.safetensors"), None, None, &dev).unwrap();
    let lora = Lora::load(&fixture_dir().join("lora.safetensors"), &sam.config, &dev).unwrap();
    let dir = common::scratch();
    let path = dir.path().join("adapter.safetensors");
    lora.save(&path).unwrap();
    let back = Lora::load(&path, &sam.config, &dev).unwrap();
    assert_eq!(back.config, lora.config);
    for ((n1, a), (n2, b)) in lora.named_vars().iter().zip(back.named_vars()) {
        assert_eq!(n1, &n2);
        assert_close(n1, a.as_tensor(), b.as_tensor(), 0.0);
    }
    // The same adapter against a model of another width.
    let other = SamConfig {
        encoder_embed_dim: 64,
        ..sam.config.clone()
    };
    let err = format!("{:#}", Lora::load(&path, &other, &dev).err().unwrap());
    assert!(
        err.contains(&path.display().to_string()) && err.contains("shape [4, 48]"),
        "{err}"
    );
    // A model file is not an adapter file.
    let err = format!(
        "{:#}",
        Lora::load(&fixture_dir().join("model.safetensors"), &sam.config, &dev)
            .err()
            .unwrap()
    );
    assert!(err.contains("not a wesam adapter file"), "{err}");
}
