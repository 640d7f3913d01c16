//! The camouflage and shadow metrics against the `pysodmetrics` package (the metric code
//! SAM-Adapter ships), on the fixture `scripts/make_sod_fixture.py` writes: S-measure, mean
//! E-measure and MAE to 1e-9, BER (SAM-Adapter's formula) to 1e-9.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use wesam::eval::sod::sod_scores;

#[test]
fn scores_match_pysodmetrics() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sod/cases.safetensors");
    let cases: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut names: Vec<&str> = cases
        .keys()
        .filter_map(|k| k.strip_suffix(".pred"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 4);
    for name in names {
        let get = |what: &str| cases[&format!("{name}.{what}")].clone();
        let pred = get("pred");
        let (h, w) = pred.dims2().unwrap();
        let pred: Vec<f64> = pred.flatten_all().unwrap().to_vec1().unwrap();
        let gt: Vec<bool> = get("gt")
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|&g| g > 0.5)
            .collect();
        let got = sod_scores(&pred, &gt, h, w);
        let want = |what: &str| get(what).to_vec1::<f64>().unwrap()[0];
        for (what, value) in [
            ("s_measure", got.s_measure),
            ("e_measure", got.e_measure),
            ("mae", got.mae),
            ("ber", got.ber),
        ] {
            let expected = want(what);
            assert!(
                (value - expected).abs() <= 1e-9,
                "{name} {what}: {value} against pysodmetrics' {expected}"
            );
        }
    }
}
