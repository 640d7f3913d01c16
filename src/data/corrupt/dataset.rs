//! A dataset seen through one of the COCO-C corruptions: images corrupted as they load, masks
//! and boxes untouched (`--corruption fog --severity 5` on any dataset).

use serde::{Deserialize, Serialize};

use super::{corrupt, Corruption};
use crate::data::{Dataset, FileIssue, Record, Sample, Split};

/// Which corruption, how strong, and the seed of its randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptionSpec {
    /// The corruption applied to every image.
    pub corruption: Corruption,
    /// 1 to 5 (the reference's COCO-C uses 5).
    pub severity: u8,
    /// Seed of the corruption's randomness, mixed with each image's id.
    pub seed: u64,
}

/// `inner` with every image corrupted on load; each image's randomness depends on the seed and
/// the image's id only, so the corrupted dataset is the same on every run.
pub struct Corrupted {
    /// The dataset whose images are corrupted.
    pub inner: Box<dyn Dataset>,
    /// The corruption, severity and seed.
    pub spec: CorruptionSpec,
}

impl Dataset for Corrupted {
    fn name(&self) -> String {
        format!(
            "{}+{}@{}",
            self.inner.name(),
            self.spec.corruption,
            self.spec.severity
        )
    }

    fn records(&self, split: Split) -> Vec<Record> {
        self.inner.records(split)
    }

    fn load(&self, record: &Record) -> anyhow::Result<Sample> {
        let mut sample = self.inner.load(record)?;
        let seed = record.id.bytes().fold(self.spec.seed, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        sample.image = corrupt(
            &sample.image,
            self.spec.corruption,
            self.spec.severity,
            seed,
        )?;
        Ok(sample)
    }

    fn index_issues(&self) -> Vec<FileIssue> {
        self.inner.index_issues()
    }
}
