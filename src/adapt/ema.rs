//! The EMA teacher: a copy of the adapters that follows the trained ones as an exponential
//! moving average, `ema = m·ema + (1 − m)·lora` after every optimiser step, when a run sets
//! `train.ema_momentum` (the reference shares one set of adapters between teacher and student).

use anyhow::Result;

use crate::model::{Lora, Sam};

/// A copy of the adapters with storage of its own, to start the average from.
pub fn ema_copy(lora: &Lora, sam: &Sam) -> Result<Lora> {
    let copy = Lora::new(&sam.config, &lora.config, 0, &sam.device)?;
    for ((_, dst), (_, src)) in copy.named_vars().iter().zip(lora.named_vars()) {
        dst.set(&src.as_tensor().copy()?)?;
    }
    Ok(copy)
}

/// `ema = m ema + (1 - m) lora`, tensor by tensor.
pub fn ema_update(ema: &Lora, lora: &Lora, m: f64) -> Result<()> {
    for ((_, e), (_, l)) in ema.named_vars().iter().zip(lora.named_vars()) {
        let v = ((e.as_tensor() * m)? + (l.as_tensor().detach() * (1.0 - m))?)?;
        e.set(&v)?;
    }
    Ok(())
}
