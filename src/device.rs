//! What libtorch this binary runs on: its version, and whether CUDA is usable (which needs
//! `torch_cuda` linked in, see `build.rs`). The model-bound operators build on this.

use tch::{Cuda, Device, Kind, Tensor};

/// A short report on libtorch and the devices it sees.
pub fn report() -> String {
    let cuda = Cuda::is_available();
    let mut s = format!(
        "libtorch: available (tch 0.24)\ncuda: {}\ncuda devices: {}\ncudnn: {}\n",
        if cuda { "available" } else { "not available" },
        Cuda::device_count(),
        Cuda::cudnn_is_available()
    );
    // A real computation on the preferred device, so a broken install shows here.
    let device = Device::cuda_if_available();
    let x = Tensor::arange(6, (Kind::Float, device)).view([2, 3]);
    let y = x.matmul(&x.transpose(0, 1)).sum(Kind::Float).double_value(&[]);
    s.push_str(&format!("check: sum(x·xᵀ) for x = arange(6).view(2,3) on {device:?} = {y} (expected 83)\n"));
    s
}
