//! One training step across the ranks of a job (`docs/distributed.md`): rank `r` of `W` takes
//! the step's images at positions `r, r + W, ...` of the global batch; the batch's instance
//! count (and the balanced BCE's pixel counts) is gathered before any loss, since every image's
//! loss is normalised by the whole batch's; after the backward passes every rank gathers every
//! image's gradients and sums them in batch order, as one process sums its batch
//! ([`super::step::batch_gradients`]). So a job ends with the same weights, bit for bit,
//! whatever the number of ranks, and every rank takes the same optimiser step. The gradients
//! travel as one f32 tensor per rank ([`Collective::all_gather_tensor`]), which NCCL gathers
//! without leaving the GPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::config::AdaptConfig;
use super::loss_terms::LossTerms;
use super::losses::PixelBalance;
use super::step::{batch_counts, image_gradients, prepare_batch, StepModels, StepSample};
use crate::dist::Collective;

/// The global-batch positions this rank trains in a step of `batch` images.
pub fn positions(dist: &dyn Collective, batch: usize) -> impl Iterator<Item = usize> {
    let t = dist.topology();
    (t.rank..batch).step_by(t.world)
}

/// Bytes of numbers written and read in one fixed order.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// A reader over [`Bytes`].
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().unwrap_or([0; N])
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.take())
    }
}

/// The terms of `l` in a fixed order.
fn loss_values(l: &LossTerms<f64>) -> Vec<f64> {
    let mut values = Vec::new();
    l.map(|v| values.push(*v));
    values
}

/// This rank's share of one step: `samples` are its images of a batch of `batch` (those of
/// [`positions`] that loaded, in order). Returns the batch's summed gradients of
/// `vars` and loss terms, the same on every rank, or `None` when the batch has no instance.
/// A set `interrupt` on any rank is set on every rank, so that all stop after the same step.
/// `exchange` grows by the time spent exchanging (waiting for the other ranks included) and
/// summing.
#[allow(clippy::too_many_arguments)]
pub fn replica_gradients(
    cfg: &AdaptConfig,
    models: StepModels,
    samples: &mut [StepSample],
    batch: usize,
    vars: &[Tensor],
    dist: &dyn Collective,
    interrupt: &AtomicBool,
    exchange: &mut Duration,
) -> Result<Option<(GradStore, LossTerms<f64>)>> {
    let world = dist.topology().world;
    let per_rank = batch.div_ceil(world);
    let slots: Vec<usize> = samples.iter().map(|s| s.position / world).collect();
    let work = prepare_batch(cfg, samples);
    let (instances, balance) = batch_counts(cfg, models.model, &work)?;

    // The batch's counts, summed in rank order (integers, so exactly in any order).
    let mut mine = Bytes::default();
    mine.u64(instances as u64);
    mine.f64(balance.positive);
    mine.f64(balance.negative);
    let started = Instant::now();
    let all = dist.all_gather(&mine.0);
    *exchange += started.elapsed();
    let (mut n_total, mut total_balance) = (0usize, PixelBalance::default());
    for chunk in all.chunks_exact(mine.0.len()) {
        let mut r = Reader(chunk);
        n_total += r.u64() as usize;
        total_balance.add(PixelBalance {
            positive: r.f64(),
            negative: r.f64(),
        });
    }
    let per_image = if n_total == 0 {
        Vec::new()
    } else {
        image_gradients(cfg, models, &work, (n_total, total_balance), vars)?
    };

    // What every image of the batch left, at its slot: a presence byte, one per variable, the
    // loss terms; its gradients go in `local`, all variables' in a row (zeros where absent), so
    // that on GPUs they stay on the device.
    let sizes: Vec<usize> = vars.iter().map(Tensor::elem_count).collect();
    let offsets: Vec<usize> = sizes
        .iter()
        .scan(0, |at, n| {
            *at += n;
            Some(*at - n)
        })
        .collect();
    let row = sizes.iter().sum::<usize>();
    let terms = loss_values(&LossTerms::default()).len();
    let slot_bytes = 1 + vars.len() + 8 * terms;
    let device = vars
        .first()
        .map_or(&candle_core::Device::Cpu, Tensor::device);
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, device);
    let mut mine = Bytes::default();
    let mut local = Vec::with_capacity(per_rank);
    mine.u8(u8::from(interrupt.load(Ordering::SeqCst)));
    let mut images = work.iter().map(|w| slots[w.0]).zip(&per_image).peekable();
    for slot in 0..per_rank {
        let start = mine.0.len();
        match images.next_if(|(s, _)| *s == slot) {
            Some((_, (grads, log))) => {
                mine.u8(1);
                let mut flat = Vec::with_capacity(vars.len());
                for (v, &n) in vars.iter().zip(&sizes) {
                    let g = grads.get(v);
                    mine.u8(u8::from(g.is_some()));
                    flat.push(match g {
                        Some(g) => g.flatten_all()?.to_dtype(DType::F32)?,
                        None => zeros(n)?,
                    });
                }
                for v in loss_values(log) {
                    mine.f64(v);
                }
                local.push(Tensor::cat(&flat, 0)?);
            }
            None => {
                mine.u8(0);
                local.push(zeros(row)?);
            }
        }
        mine.0.resize(start + slot_bytes, 0);
    }
    let local = Tensor::cat(&local, 0)?;
    let started = Instant::now();
    let all = dist.all_gather(&mine.0);
    let gathered = dist.all_gather_tensor(&local)?;
    let rank_bytes = mine.0.len();

    // The sum in global batch order, as one process takes it.
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut log = LossTerms::default();
    for position in 0..batch {
        let (rank, slot) = (position % world, position / world);
        let chunk = &all[rank * rank_bytes..(rank + 1) * rank_bytes];
        let mut r = Reader(&chunk[1 + slot * slot_bytes..1 + (slot + 1) * slot_bytes]);
        if r.u8() == 0 {
            continue;
        }
        let present: Vec<bool> = (0..vars.len()).map(|_| r.u8() == 1).collect();
        let values: Vec<f64> = (0..terms).map(|_| r.f64()).collect();
        let mut next = values.iter();
        log.add(&log.map(|_| next.next().copied().unwrap_or(0.0)));
        let image = (rank * per_rank + slot) * row;
        for (i, v) in vars.iter().enumerate().filter(|(i, _)| present[*i]) {
            let g = gathered
                .narrow(0, image + offsets[i], sizes[i])?
                .reshape(v.shape())?
                .to_dtype(v.dtype())?;
            sums[i] = Some(match sums[i].take() {
                Some(sum) => sum.add(&g)?,
                None => g,
            });
        }
    }
    if all.chunks_exact(rank_bytes).any(|c| c[0] == 1) {
        interrupt.store(true, Ordering::SeqCst);
    }
    *exchange += started.elapsed();
    if n_total == 0 {
        return Ok(None);
    }
    let mut grads = GradStore::default();
    for (v, sum) in vars.iter().zip(sums) {
        if let Some(sum) = sum {
            grads.insert(v, sum);
        }
    }
    Ok(Some((grads, log)))
}
