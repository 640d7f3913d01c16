//! Streamed, parallel loading: records decoded a chunk at a time on all cores and handed out in
//! order, so that a whole dataset can be read fast without ever being held in memory.

use rayon::prelude::*;

use super::{Dataset, Record, Sample};

/// Loads `records` in order, `chunk` at a time in parallel (rayon): at most one chunk of decoded
/// samples is in memory. A record that fails to load yields its error, and loading goes on.
pub fn load_parallel<'a>(
    ds: &'a dyn Dataset,
    records: &'a [Record],
    chunk: usize,
) -> impl Iterator<Item = (Record, anyhow::Result<Sample>)> + 'a {
    records.chunks(chunk.max(1)).flat_map(move |part| {
        part.par_iter()
            .map(|r| (r.clone(), ds.load(r)))
            .collect::<Vec<_>>()
    })
}

/// A chunk size that keeps every core busy: two records per rayon thread.
pub fn default_chunk() -> usize {
    2 * rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;
    use image::RgbImage;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records `0..n`; loading `i` fails for multiples of 3 and counts live loads.
    struct Counting {
        n: usize,
        loaded: AtomicUsize,
    }

    impl Dataset for Counting {
        fn name(&self) -> String {
            "counting".into()
        }
        fn records(&self, _split: Split) -> Vec<Record> {
            (0..self.n)
                .map(|i| Record {
                    id: i.to_string(),
                    image: format!("{i}.png").into(),
                    annotation: None,
                    key: i as u64,
                })
                .collect()
        }
        fn load(&self, record: &Record) -> anyhow::Result<Sample> {
            self.loaded.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(!record.key.is_multiple_of(3), "cannot read {}", record.id);
            Ok(Sample {
                id: record.id.clone(),
                image_path: record.image.clone(),
                image: RgbImage::new(1, 1),
                instances: Vec::new(),
            })
        }
    }

    #[test]
    fn yields_in_order_one_chunk_at_a_time() {
        let ds = Counting {
            n: 10,
            loaded: AtomicUsize::new(0),
        };
        let records = ds.records(Split::All);
        let mut it = load_parallel(&ds, &records, 4);
        let (first, res) = it.next().unwrap();
        assert_eq!(first.id, "0");
        assert!(res.is_err());
        assert_eq!(ds.loaded.load(Ordering::SeqCst), 4); // only the first chunk
        let rest: Vec<_> = it.collect();
        let ids: Vec<_> = rest.iter().map(|(r, _)| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        assert_eq!(rest.iter().filter(|(_, s)| s.is_err()).count(), 3);
        assert_eq!(ds.loaded.load(Ordering::SeqCst), 10);
    }
}
