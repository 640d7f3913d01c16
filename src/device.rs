//! Choosing the compute device from the command line.

use anyhow::{bail, Context};
use candle_core::Device;

/// A device the user can ask for; CUDA and Metal need the matching cargo feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    /// Opens the device, or says in one line why it cannot: the build feature is missing, or
    /// the device (driver, GPU) is not there. Commands call it before touching any data.
    pub fn open(self) -> anyhow::Result<Device> {
        self.open_ordinal(0)
    }

    /// Opens the `ordinal`-th GPU of the kind (a rank of a job opens its local rank's); the
    /// CPU is the same device for every ordinal.
    pub fn open_ordinal(self, ordinal: usize) -> anyhow::Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda if cfg!(feature = "cuda") => Device::new_cuda(ordinal)
                .with_context(|| format!("cannot open CUDA device {ordinal}")),
            DeviceKind::Metal if cfg!(feature = "metal") => Device::new_metal(ordinal)
                .with_context(|| format!("cannot open Metal device {ordinal}")),
            DeviceKind::Cuda => {
                bail!("this wesam was built without CUDA: rebuild with `--features cuda`")
            }
            DeviceKind::Metal => {
                bail!("this wesam was built without Metal: rebuild with `--features metal`")
            }
        }
    }
}
