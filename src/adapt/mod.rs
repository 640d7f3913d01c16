//! Adaptation and training (`docs/method.md` §1.3, §2, §5.1).
//!
//! [`config`] is a run's configuration; [`losses`] holds every WeSAM loss as a differentiable
//! candle function and the per-image objectives, whose terms travel as [`loss_terms`]; [`step`]
//! the views, prompts and model passes of one step; [`data_parallel`] a step's
//! share of a rank in a job of several; [`optim`] the Adam variants with resumable
//! state and the learning-rate schedules; [`trainer`] the loop, which keeps its run in a
//! [`run_dir`], its [`checkpoint`] and [`metrics`], trains what [`trained`] says (with an
//! [`ema`] teacher if asked), keeps weights by [`selection`], stops when [`divergence`] says
//! training diverged, and reports to an [`observer`].

pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod divergence;
pub mod ema;
pub mod loss_terms;
pub mod losses;
pub mod metrics;
pub mod observer;
pub mod optim;
pub mod run_dir;
pub mod selection;
pub mod step;
pub mod trained;
pub mod trainer;
