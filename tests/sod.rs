//! The camouflage and shadow metrics against the `pysodmetrics` package (the metric code
//! SAM-Adapter ships), on the fixture `scripts/make_sod_fixture.py` writes: S-measure, mean
//! E-measure, weighted F-measure and MAE to 1e-9, BER (SAM-Adapter's formula) to 1e-9; and the
//! nearest object pixels the weighted F-measure uses, exactly as scipy's, ties included.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use wesam::eval::distance::nearest_object;
use wesam::eval::sod::sod_scores;

fn fixture() -> HashMap<String, Tensor> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sod/cases.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn scores_match_pysodmetrics() {
    let cases = fixture();
    let mut names: Vec<&str> = cases
        .keys()
        .filter_map(|k| k.strip_suffix(".pred"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
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
            ("weighted_f", got.weighted_f),
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

#[test]
fn nearest_object_pixels_break_ties_as_scipy() {
    let cases = fixture();
    let (h, w) = cases["edt.mask"].dims2().unwrap();
    let mask: Vec<bool> = values(&cases["edt.mask"])
        .iter()
        .map(|&m| m > 0.5)
        .collect();
    let (rows, cols) = (values(&cases["edt.rows"]), values(&cases["edt.cols"]));
    let nearest = nearest_object(&mask, h, w).unwrap().nearest;
    let mismatched: Vec<usize> = (0..h * w)
        .filter(|&i| nearest[i] != (rows[i] as usize, cols[i] as usize))
        .collect();
    assert!(
        mismatched.is_empty(),
        "{} of {} pixels differ from scipy, first at {}",
        mismatched.len(),
        h * w,
        mismatched[0]
    );
}
