//! Parity of the full `vit_b` configuration with random weights against the official model at
//! 1024² (minutes on a CPU, so ignored by default). Make the fixture, then run the test:
//!
//!   python3 scripts/make_parity_fixture.py --vit-b --out /tmp/vitb
//!   WESAM_VITB_FIXTURE=/tmp/vitb cargo test --release --test vit_b_parity -- --ignored --nocapture

mod common;

use std::path::PathBuf;

use candle_core::Tensor;
use common::{assert_close, dice_bce, max_abs};
use wesam::model::{Lora, Prompts, Sam};

#[test]
#[ignore = "needs WESAM_VITB_FIXTURE (see the file's doc) and minutes of CPU"]
fn vit_b_outputs_and_lora_gradients_match_official() {
    let dir = PathBuf::from(std::env::var("WESAM_VITB_FIXTURE").expect("set WESAM_VITB_FIXTURE"));
    let dev = common::device();
    let c = candle_core::safetensors::load(dir.join("cases.safetensors"), &dev).unwrap();
    let sam = Sam::load(&dir.join("model.safetensors"), None, None, &dev).unwrap();
    let lora = Lora::load(&dir.join("lora.safetensors"), &sam.config, &dev).unwrap();
    let embed = sam.encode(&c["image"], None).unwrap();
    assert_close("embed", &embed, &c["embed"], 1e-3);
    let prompts = Prompts {
        boxes: Some(c["box"].clone()),
        ..Default::default()
    };
    let (low, _) = sam.decode(&embed, &prompts, false).unwrap();
    assert_close("box.single.low_res", &low, &c["box.single.low_res"], 1e-3);

    let embed = sam.encode(&c["image"], Some(&lora)).unwrap();
    assert_close("embed_lora", &embed, &c["embed_lora"], 1e-3);
    let (low, _) = sam.decode(&embed, &prompts, false).unwrap();
    let loss = dice_bce(&low, &c["grad.target"]);
    assert_close(
        "grad.loss",
        &loss.reshape(1).unwrap(),
        &c["grad.loss"],
        1e-4,
    );
    let grads = loss.backward().unwrap();
    let mut worst = 0f32;
    for (name, var) in lora.named_vars() {
        let g: &Tensor = grads.get(var.as_tensor()).unwrap();
        let e = &c[&format!("grad.{name}")];
        let rel = common::max_abs_diff(g, e) / max_abs(e);
        worst = worst.max(rel);
        assert!(rel < 1e-2, "{name}: relative error {rel}");
    }
    eprintln!("worst relative LoRA gradient error: {worst:.2e}");
}
