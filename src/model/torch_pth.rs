//! Writing PyTorch checkpoints: the zip container `torch.save` has written since PyTorch 1.6,
//! holding a state dict that `torch.load(path, weights_only=True)` returns as an
//! `OrderedDict[str, Tensor]`. That call is how the official `sam_model_registry`, EBSeg's
//! `build_sam` and micro-sam load SAM weights, so a file written here drops into them in place of
//! an official checkpoint.
//!
//! The archive holds, under one top-level folder, `data.pkl` (a pickle, protocol 2, of the
//! state dict), `byteorder`, one record per tensor under `data/` with its raw little-endian
//! bytes, and `version`. Every entry is stored uncompressed with its data at a 64-byte offset,
//! as torch writes them (so that `torch.load(..., mmap=True)` can map the storages). The pickle
//! is written by hand: it names only `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`
//! and the typed storage classes, all of which the weights-only unpickler allows.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Tensor};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::checkpoint::all_finite;

/// The offset every record's data starts at a multiple of, as in torch's own files.
const RECORD_ALIGNMENT: u16 = 64;

/// Writes `tensors`, in this order and under these names, as a PyTorch checkpoint at `path`,
/// atomically (see [`crate::io::write_atomically`]). Refuses, naming the tensor, a dtype other
/// than F32, F16, BF16, F64, I64 and U8 (the ones candle's reader reads back) and a non-finite
/// float value: such weights are unusable, and the file they would replace may not be.
pub fn write_pth(path: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    let mut storages = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let Some(storage) = storage_class(t.dtype()) else {
            bail!(
                "refusing to write {}: tensor {name} is {:?}, which a PyTorch checkpoint \
                 written by wesam cannot hold (f32, f16, bf16, f64, i64 and u8 can)",
                path.display(),
                t.dtype()
            );
        };
        if t.dtype().is_float() && !all_finite(t)? {
            bail!(
                "refusing to write {}: tensor {name} holds NaN or infinite values",
                path.display()
            );
        }
        storages.push(storage);
    }
    let pickle = state_dict_pickle(tensors, &storages);
    let archive = archive_name(path);
    crate::io::write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut zip = ZipWriter::new(BufWriter::new(file));
        let mut record = |name: String, bytes: &[u8]| -> anyhow::Result<()> {
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .with_alignment(RECORD_ALIGNMENT)
                .large_file(bytes.len() as u64 >= zip::ZIP64_BYTES_THR);
            zip.start_file(format!("{archive}/{name}"), options)?;
            zip.write_all(bytes)?;
            Ok(())
        };
        record("data.pkl".into(), &pickle)?;
        record("byteorder".into(), b"little")?;
        for (key, (_, t)) in tensors.iter().enumerate() {
            let mut bytes = Vec::with_capacity(t.elem_count() * t.dtype().size_in_bytes());
            t.write_bytes(&mut bytes)?;
            record(format!("data/{key}"), &bytes)?;
        }
        record("version".into(), b"3\n")?;
        zip.finish()?.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    })
}

/// The archive's top-level folder: the file's stem, as `torch.save` names it, or `archive`
/// (torch's name when it writes to a buffer) for a stem with other characters than ASCII
/// letters, digits, `_`, `-` and `.`.
fn archive_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        .unwrap_or("archive")
        .to_string()
}

/// The typed storage class (in module `torch`) that holds elements of `dtype`.
fn storage_class(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("FloatStorage"),
        DType::F16 => Some("HalfStorage"),
        DType::BF16 => Some("BFloat16Storage"),
        DType::F64 => Some("DoubleStorage"),
        DType::I64 => Some("LongStorage"),
        DType::U8 => Some("ByteStorage"),
        _ => None,
    }
}

/// `data.pkl`: `OrderedDict((name, _rebuild_tensor_v2(storage, 0, size, stride, False,
/// OrderedDict())) ...)`, each storage a persistent id `('storage', torch.<class>, '<index>',
/// 'cpu', numel)` naming the record `data/<index>`; `torch.save`'s own stream without its memo.
fn state_dict_pickle(tensors: &[(String, Tensor)], storages: &[&str]) -> Vec<u8> {
    let mut p = Pickle(vec![0x80, 2]); // PROTO 2
    p.ordered_dict();
    p.op(b'('); // MARK: the items
    for (key, ((name, t), storage)) in tensors.iter().zip(storages).enumerate() {
        p.string(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'('); // MARK: its arguments
        p.op(b'('); // MARK: the storage's persistent id
        p.string("storage");
        p.global("torch", storage);
        p.string(&key.to_string());
        p.string("cpu");
        p.int(t.elem_count());
        p.op(b't'); // TUPLE
        p.op(b'Q'); // BINPERSID
        p.int(0); // storage offset
        p.tuple(t.dims());
        p.tuple(&contiguous_strides(t.dims()));
        p.op(0x89); // NEWFALSE: requires_grad
        p.ordered_dict(); // backward hooks
        p.op(b't'); // TUPLE
        p.op(b'R'); // REDUCE
    }
    p.op(b'u'); // SETITEMS
    p.op(b'.'); // STOP
    p.0
}

/// The strides of a row-major tensor of size `dims`, as torch computes them (a dimension of
/// size 0 counts as 1).
fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for i in (1..dims.len()).rev() {
        strides[i - 1] = strides[i] * dims[i].max(1);
    }
    strides
}

/// A pickle stream being written, protocol 2 opcodes only.
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, code: u8) {
        self.0.push(code);
    }

    /// GLOBAL `module.name`.
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    /// BINUNICODE.
    fn string(&mut self, s: &str) {
        self.op(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// The smallest of BININT1, BININT2, BININT and LONG1 (8 bytes, two's complement: sizes
    /// and element counts stay below 2^63).
    fn int(&mut self, v: usize) {
        if let Ok(v) = u8::try_from(v) {
            self.0.extend_from_slice(&[b'K', v]);
        } else if let Ok(v) = u16::try_from(v) {
            self.op(b'M');
            self.0.extend_from_slice(&v.to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.op(b'J');
            self.0.extend_from_slice(&v.to_le_bytes());
        } else {
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&(v as u64).to_le_bytes());
        }
    }

    /// A tuple of integers (MARK ... TUPLE; empty for a 0-dim tensor's size and stride).
    fn tuple(&mut self, values: &[usize]) {
        self.op(b'(');
        for &v in values {
            self.int(v);
        }
        self.op(b't');
    }

    /// An empty `collections.OrderedDict()` (GLOBAL, EMPTY_TUPLE, REDUCE).
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use candle_core::Device;

    use super::*;

    /// Tensors of every written dtype, a 0-dim scalar and a transposed (strided) view among them.
    fn sample() -> Vec<(String, Tensor)> {
        let dev = Device::Cpu;
        let f32s = Tensor::new(&[[1.5f32, -0.0, 3.25e-39], [f32::MAX, -7.0, 1e-3]], &dev).unwrap();
        vec![
            ("encoder.weight".to_string(), f32s.clone()),
            ("encoder.weight_t".to_string(), f32s.t().unwrap()),
            (
                "half".to_string(),
                Tensor::new(&[0.5f32, -2.0, 65504.0, 1e-7], &dev)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            ),
            (
                "brain.float".to_string(),
                Tensor::arange(0f32, 12.0, &dev)
                    .unwrap()
                    .reshape((2, 3, 2))
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap(),
            ),
            (
                "scalar".to_string(),
                Tensor::new(std::f64::consts::PI, &dev).unwrap(),
            ),
            (
                "counts".to_string(),
                Tensor::new(&[-1i64, 0, i64::MAX, 1 << 40], &dev).unwrap(),
            ),
            (
                "bytes".to_string(),
                Tensor::new(&[0u8, 1, 127, 128, 255], &dev).unwrap(),
            ),
            (
                "big".to_string(),
                Tensor::arange(0f32, 70_000.0, &dev).unwrap(),
            ),
        ]
    }

    /// A tensor's elements as the little-endian bytes a file holds: equal bytes, equal bits.
    fn bytes(t: &Tensor) -> Vec<u8> {
        let mut b = Vec::new();
        t.write_bytes(&mut b).unwrap();
        b
    }

    #[test]
    fn candle_reads_back_every_name_dtype_shape_and_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.pth");
        let tensors = sample();
        write_pth(&path, &tensors).unwrap();
        let read: std::collections::HashMap<String, Tensor> = candle_core::pickle::read_all(&path)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(read.len(), tensors.len());
        for (name, t) in &tensors {
            let r = &read[name];
            assert_eq!(r.dtype(), t.dtype(), "{name}");
            assert_eq!(r.dims(), t.dims(), "{name}");
            assert_eq!(bytes(r), bytes(t), "{name}");
        }
        assert_eq!(read["scalar"].rank(), 0);
        assert!(!crate::io::temporary_path(&path).exists());
    }

    #[test]
    fn the_archive_is_torch_layout_stored_and_64_byte_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sam_tiny.pth");
        let tensors = sample();
        write_pth(&path, &tensors).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
        let names: Vec<String> = (0..zip.len())
            .map(|i| zip.by_index(i).unwrap().name().unwrap().to_string())
            .collect();
        let mut expected = vec!["data.pkl".to_string(), "byteorder".into()];
        expected.extend((0..tensors.len()).map(|k| format!("data/{k}")));
        expected.push("version".into());
        let expected: Vec<String> = expected.iter().map(|n| format!("sam_tiny/{n}")).collect();
        assert_eq!(names, expected);
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            assert_eq!(entry.compression(), CompressionMethod::Stored, "{name}");
            // The data start, from the local header: 30 fixed bytes, then the name and extra
            // field whose lengths sit at offsets 26 and 28.
            let mut header = [0u8; 30];
            file.seek(SeekFrom::Start(entry.header_start())).unwrap();
            file.read_exact(&mut header).unwrap();
            assert_eq!(&header[..4], b"PK\x03\x04");
            let name_len = u16::from_le_bytes([header[26], header[27]]) as u64;
            let extra_len = u16::from_le_bytes([header[28], header[29]]) as u64;
            let data_start = entry.header_start() + 30 + name_len + extra_len;
            assert_eq!(data_start % 64, 0, "{name} starts at {data_start}");
            let mut stored = vec![0u8; entry.size() as usize];
            file.seek(SeekFrom::Start(data_start)).unwrap();
            file.read_exact(&mut stored).unwrap();
            let mut read = Vec::new();
            entry.read_to_end(&mut read).unwrap();
            assert_eq!(stored, read, "{name}: the bytes at the data start");
        }
        let mut text = |name: &str| {
            let mut s = String::new();
            zip.by_name(&format!("sam_tiny/{name}"))
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            s
        };
        assert_eq!(text("version"), "3\n");
        assert_eq!(text("byteorder"), "little");
    }

    #[test]
    fn an_odd_file_name_gets_the_archive_folder() {
        assert_eq!(archive_name(Path::new("out/sam vit b.pth")), "archive");
        assert_eq!(
            archive_name(Path::new("out/sam_vit_b.v2.pth")),
            "sam_vit_b.v2"
        );
    }

    #[test]
    fn non_finite_values_and_unwritable_dtypes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pth");
        let dev = Device::Cpu;
        let good = ("fine".to_string(), Tensor::new(&[1f32, 2.0], &dev).unwrap());
        let nan = (
            "mask_decoder.broken".to_string(),
            Tensor::new(&[1f32, f32::NAN], &dev).unwrap(),
        );
        let err = write_pth(&path, &[good.clone(), nan]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("mask_decoder.broken") && msg.contains("bad.pth"),
            "{msg}"
        );
        let odd = (
            "indices".to_string(),
            Tensor::new(&[1u32, 2], &dev).unwrap(),
        );
        let msg = write_pth(&path, &[good, odd]).unwrap_err().to_string();
        assert!(msg.contains("indices") && msg.contains("U32"), "{msg}");
        assert!(!path.exists());
    }
}
