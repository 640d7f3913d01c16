#!/usr/bin/env python3
"""Parity fixture for wesam's camouflage and shadow metrics (`src/eval/sod.rs`).

Writes ``tests/fixtures/sod/cases.safetensors``: for each of a few generated images ``k``,
``k.pred`` (a probability map in [0, 1], float64, as SAM-Adapter computes sigmoid(logits)),
``k.gt`` (0/1), and the scores the ``pysodmetrics`` package (the metric code SAM-Adapter
copies) gives when called as SAM-Adapter calls it (pred * 255, gt * 255): ``k.s_measure``
(alpha 0.5), ``k.e_measure`` (the mean of the 256-threshold curve), ``k.weighted_f``
(beta 0.3, as SAM-Adapter passes it) and ``k.mae``; and
``k.ber``, SAM-Adapter's per-image balanced error rate (both maps * 255 thresholded at > 125),
written out here from its formula. Also ``edt.mask`` and ``edt.rows`` / ``edt.cols``, the
nearest object pixel scipy's ``distance_transform_edt`` (which the weighted F-measure calls)
gives every pixel of a sparse mask full of ties. Needs numpy, scipy, safetensors and
pysodmetrics.
"""

import os

import numpy as np
import py_sod_metrics as M
from scipy.ndimage import distance_transform_edt
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "sod", "cases.safetensors")


def ber(pred, gt):
    p, g = pred * 255 > 125, gt * 255 > 125
    tp, tn = np.sum(p & g), np.sum(~p & ~g)
    fp, fn = np.sum(p & ~g), np.sum(~p & g)
    pos = (1 - tp / (tp + fn)) * 100
    neg = (1 - tn / (tn + fp)) * 100
    return (pos + neg) / 2


def cases():
    rng = np.random.default_rng(20241207)
    h, w = 37, 52
    yy, xx = np.mgrid[0:h, 0:w]
    ellipse = (((xx - 20) / 12.0) ** 2 + ((yy - 17) / 9.0) ** 2 < 1).astype(np.float64)
    blobs = ((((xx - 10) ** 2 + (yy - 8) ** 2) < 30) | (((xx - 40) ** 2 + (yy - 28) ** 2) < 50)).astype(np.float64)
    shifted = np.roll(ellipse, (3, 5), axis=(0, 1))
    noisy = np.clip(0.7 * ellipse + 0.3 * rng.random((h, w)), 0, 1)
    smooth = 1 / (1 + np.exp(-(6 - np.hypot(xx - 22, yy - 18)) / 2.0))
    yield "ellipse_noisy", noisy, ellipse
    yield "ellipse_shifted", np.clip(shifted * 0.9 + 0.05, 0, 1), ellipse
    yield "blobs_smooth", smooth, blobs
    yield "blobs_random", rng.random((h, w)), blobs
    # Isolated object pixels at even offsets: many background pixels have several nearest ones.
    sparse = np.zeros((h, w))
    sparse[4:h:8, 6:w:10] = 1
    sparse[20, 21] = sparse[22, 23] = 1
    yield "sparse_ties", rng.random((h, w)), sparse
    yield "sparse_smooth", smooth, sparse


def main():
    out = {}
    for name, pred, gt in cases():
        s, e, wf, m = M.Smeasure(), M.Emeasure(), M.WeightedFmeasure(beta=0.3), M.MAE()
        for metric in (s, e, wf, m):
            metric.step(pred=pred * 255, gt=(gt * 255).astype(np.uint8))
        out[f"{name}.pred"] = pred
        out[f"{name}.gt"] = gt
        out[f"{name}.s_measure"] = np.array([s.get_results()["sm"]])
        out[f"{name}.e_measure"] = np.array([e.get_results()["em"]["curve"].mean()])
        out[f"{name}.weighted_f"] = np.array([wf.get_results()["wfm"]])
        out[f"{name}.mae"] = np.array([m.get_results()["mae"]])
        out[f"{name}.ber"] = np.array([ber(pred, gt)])
        print(name, {k.split(".")[1]: float(v[0]) for k, v in out.items() if k.startswith(name) and v.size == 1})
    mask = np.zeros((29, 31), dtype=bool)
    mask[3:29:6, 2:31:7] = True
    mask[14, 14] = mask[16, 16] = True
    _, (rows, cols) = distance_transform_edt(~mask, return_indices=True)
    out["edt.mask"] = mask.astype(np.float64)
    out["edt.rows"] = rows.astype(np.float64)
    out["edt.cols"] = cols.astype(np.float64)
    save_file(out, OUT)


if __name__ == "__main__":
    main()
