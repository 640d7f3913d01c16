//! Train / val / test splits: the reference's k:1 interleave, the validation part carved from the
//! end of the training split, and [`Splits`], the per-split record lists every dataset serves.
//!
//! The reference shuffles its training list once with an unseeded `random.shuffle`; wesam keeps
//! it in order so that the splits are reproducible (training shuffles with its own seed).

use std::collections::HashSet;

use super::{Record, Split};

/// The reference's interleaved split of a list (in the order given; callers sort first where the
/// reference does): repeatedly `k` items for train and 1 for test; a last group of fewer than
/// `k + 1` items goes to train. `k = 0` puts everything in test.
pub fn interleave<T>(items: Vec<T>, k: usize) -> (Vec<T>, Vec<T>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, item) in items.into_iter().enumerate() {
        if i % (k + 1) == k {
            test.push(item);
        } else {
            train.push(item);
        }
    }
    (train, test)
}

/// Splits the last `round(fraction * n)` items off a training list as the validation part
/// (deterministic, so model selection never sees the test split). Returns `(train, val)`.
pub fn carve_val<T>(mut train: Vec<T>, fraction: f64) -> (Vec<T>, Vec<T>) {
    let n_val = (fraction.clamp(0.0, 1.0) * train.len() as f64).round() as usize;
    let val = train.split_off(train.len() - n_val);
    (train, val)
}

/// The records of every split of one dataset, fixed when it is indexed.
#[derive(Debug, Clone, Default)]
pub struct Splits {
    all: Vec<Record>,
    train: Vec<Record>,
    val: Vec<Record>,
    test: Vec<Record>,
}

impl Splits {
    /// `records` (in the dataset's order) split k:1 by [`interleave`], then `val_fraction` of
    /// train carved off by [`carve_val`]; `All` keeps the given order.
    pub fn interleaved(records: Vec<Record>, k: usize, val_fraction: f64) -> Self {
        let (train, test) = interleave(records.clone(), k);
        let (train, val) = carve_val(train, val_fraction);
        Self {
            all: records,
            train,
            val,
            test,
        }
    }

    /// Explicit train and test lists (an official split, split files) and the validation list
    /// when there is one, else the part carved from train by `val_fraction`; `All` is train,
    /// val and test in that order.
    pub fn official(
        train: Vec<Record>,
        val: Option<Vec<Record>>,
        test: Vec<Record>,
        val_fraction: f64,
    ) -> Self {
        let (train, val) = match val {
            Some(val) => (train, val),
            None => carve_val(train, val_fraction),
        };
        let mut seen = HashSet::new();
        let all = [&train, &val, &test]
            .into_iter()
            .flatten()
            .filter(|r| seen.insert(r.image.clone()))
            .cloned()
            .collect();
        Self {
            all,
            train,
            val,
            test,
        }
    }

    /// The same splits with `All` replaced by `all` (for split files that leave records out).
    pub fn with_all(self, all: Vec<Record>) -> Self {
        Self { all, ..self }
    }

    /// No split (CHAMELEON is evaluated whole): every split returns every record.
    pub fn unsplit(records: Vec<Record>) -> Self {
        Self {
            all: records.clone(),
            train: records.clone(),
            val: records.clone(),
            test: records,
        }
    }

    /// The records of one split.
    pub fn get(&self, split: Split) -> &[Record] {
        match split {
            Split::All => &self.all,
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, k: usize) -> (usize, usize) {
        let (a, b) = interleave((0..n).collect(), k);
        (a.len(), b.len())
    }

    #[test]
    fn interleave_matches_the_reference_counts() {
        assert_eq!(sizes(1000, 5), (834, 166)); // Kvasir-SEG
        assert_eq!(sizes(609, 5), (508, 101)); // CVC-ClinicDB
        assert_eq!(sizes(2026, 4), (1621, 405)); // COD10K test set, as the reference comments
        assert_eq!(sizes(111, 1), (56, 55)); // OSD: alternate
        assert_eq!(sizes(5, 5), (5, 0));
        assert_eq!(sizes(0, 6), (0, 0));
    }

    #[test]
    fn interleave_takes_every_k_plus_first_item_for_test() {
        let (train, test) = interleave((0..14).collect::<Vec<_>>(), 5);
        assert_eq!(test, vec![5, 11]);
        assert_eq!(train, vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13]);
    }

    #[test]
    fn val_is_the_rounded_tail_of_train() {
        let (train, val) = carve_val((0..834).collect::<Vec<_>>(), 0.1);
        assert_eq!((train.len(), val.len()), (751, 83)); // round(83.4)
        assert_eq!(val[0], 751);
        let (train, val) = carve_val((0..5).collect::<Vec<_>>(), 0.5);
        assert_eq!((train.len(), val.len()), (2, 3)); // round(2.5) = 3
        let (train, val) = carve_val((0..5).collect::<Vec<_>>(), 0.0);
        assert_eq!((train.len(), val.len()), (5, 0));
    }

    fn rec(i: usize) -> Record {
        Record {
            id: i.to_string(),
            image: format!("{i}.png").into(),
            annotation: None,
            key: 0,
        }
    }

    #[test]
    fn splits_serve_every_part() {
        let s = Splits::interleaved((0..13).map(rec).collect(), 5, 0.2);
        assert_eq!(s.get(Split::All).len(), 13);
        assert_eq!(s.get(Split::Test).len(), 2);
        assert_eq!(s.get(Split::Val).len(), 2); // round(0.2 * 11)
        assert_eq!(s.get(Split::Train).len(), 9);
        assert_eq!(s.get(Split::Val)[1], rec(12));
        let u = Splits::unsplit((0..3).map(rec).collect());
        assert_eq!(u.get(Split::Test), u.get(Split::Train));
        let o = Splits::official(vec![rec(0), rec(1)], None, vec![rec(2)], 0.5);
        assert_eq!(o.get(Split::All).len(), 3);
        assert_eq!(o.get(Split::Val), &[rec(1)]);
    }
}
