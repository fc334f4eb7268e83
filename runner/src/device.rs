//! Where the model computes: `--device auto|cpu|cuda[:N]` and `--dtype auto|f32|bf16|f16`.
//!
//! `auto` picks the first CUDA device when the binary is built with the `cuda` feature and
//! one is visible, else the CPU; the `auto` dtype is bf16 on CUDA and f32 on the CPU (the fused
//! CPU kernels are f32). Also: a short description of a device (GPU name, memory) and a sampler
//! of peak device memory for benchmarks.

use candle_core::{DType, Device};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("invalid device `{0}`: expected auto, cpu, cuda or cuda:N")]
    ParseDevice(String),
    #[error("invalid dtype `{0}`: expected auto, f32, bf16 or f16")]
    ParseDType(String),
    #[error(
        "device `{0}` asked for, but this binary was built without the `cuda` feature \
         (build with `--features cuda`, see scripts/check-cuda-build.sh)"
    )]
    NoCudaFeature(String),
    #[error("device `cuda:{ordinal}` asked for, but {visible} CUDA device(s) are visible{detail}")]
    NoCudaDevice {
        ordinal: usize,
        visible: usize,
        detail: String,
    },
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

/// What `--device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::ParseDevice(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What `--dtype` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DTypeSpec {
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl FromStr for DTypeSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "fp16" | "half" => Ok(Self::F16),
            _ => Err(DeviceError::ParseDType(s.to_string())),
        }
    }
}

impl fmt::Display for DTypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

/// Number of visible CUDA devices (0 without the `cuda` feature or without a driver/GPU).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda::cudarc::driver::CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// Opens the device `spec` asks for.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device, DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if cfg!(feature = "cuda") && cuda_device_count() > 0 {
                Ok(Device::new_cuda(0)?)
            } else {
                Ok(Device::Cpu)
            }
        }
        DeviceSpec::Cuda(ordinal) => {
            if !cfg!(feature = "cuda") {
                return Err(DeviceError::NoCudaFeature(spec.to_string()));
            }
            let visible = cuda_device_count();
            if ordinal >= visible {
                let detail = if visible == 0 {
                    " (no NVIDIA driver, no GPU, or CUDA_VISIBLE_DEVICES hides them)".to_string()
                } else {
                    String::new()
                };
                return Err(DeviceError::NoCudaDevice {
                    ordinal,
                    visible,
                    detail,
                });
            }
            Ok(Device::new_cuda(ordinal)?)
        }
    }
}

/// The compute dtype for `spec` on `device`: `auto` is bf16 on CUDA, f32 elsewhere.
pub fn resolve_dtype(spec: DTypeSpec, device: &Device) -> DType {
    match spec {
        DTypeSpec::Auto if device.is_cuda() => DType::BF16,
        DTypeSpec::Auto | DTypeSpec::F32 => DType::F32,
        DTypeSpec::Bf16 => DType::BF16,
        DTypeSpec::F16 => DType::F16,
    }
}

/// Both at once, as the commands take them.
pub fn resolve(device: DeviceSpec, dtype: DTypeSpec) -> Result<(Device, DType), DeviceError> {
    let d = resolve_device(device)?;
    let t = resolve_dtype(dtype, &d);
    Ok((d, t))
}

/// A resolved device and dtype: where and in which precision a stage runs the model.
#[derive(Debug, Clone)]
pub struct Compute {
    pub device: Device,
    pub dtype: DType,
}

impl Default for Compute {
    fn default() -> Self {
        Self::cpu()
    }
}

impl Compute {
    /// The CPU in f32 (the fused CPU kernels): what requests without `compute` get.
    pub fn cpu() -> Self {
        Compute {
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    /// Resolves the flags (`auto` looks for a visible CUDA device).
    pub fn new(device: DeviceSpec, dtype: DTypeSpec) -> Result<Self, DeviceError> {
        let (device, dtype) = resolve(device, dtype)?;
        Ok(Compute { device, dtype })
    }

    /// The device and dtype of a stage request (`None`: the CPU in f32).
    pub fn from_request(
        compute: Option<pruneforge_api::spec::ResolvedCompute>,
    ) -> Result<Self, DeviceError> {
        match compute {
            None => Ok(Self::cpu()),
            Some(c) => {
                let (device, dtype) = specs_of(c);
                Self::new(device, dtype)
            }
        }
    }

    /// What a stage result records: device, dtype, GPU name; the peaks come from the caller.
    pub fn report(
        &self,
        peak_device: Option<MemoryPeak>,
    ) -> pruneforge_api::contract::ComputeReport {
        let info = describe(&self.device);
        pruneforge_api::contract::ComputeReport {
            device: info.device,
            dtype: dtype_name(self.dtype).into(),
            gpu_name: info.name,
            peak_device_memory_bytes: peak_device.map(|p| p.peak_bytes),
            peak_host_memory_bytes: peak_host_memory_bytes(),
        }
    }
}

/// The flags that the API's resolved compute stands for.
pub fn specs_of(c: pruneforge_api::spec::ResolvedCompute) -> (DeviceSpec, DTypeSpec) {
    use pruneforge_api::spec::{ComputeDevice, ComputeDtype};
    let device = match c.device {
        ComputeDevice::Auto => DeviceSpec::Auto,
        ComputeDevice::Cpu => DeviceSpec::Cpu,
        ComputeDevice::Cuda => DeviceSpec::Cuda(0),
    };
    let dtype = match c.dtype {
        ComputeDtype::Auto => DTypeSpec::Auto,
        ComputeDtype::F32 => DTypeSpec::F32,
        ComputeDtype::Bf16 => DTypeSpec::Bf16,
        ComputeDtype::F16 => DTypeSpec::F16,
    };
    (device, dtype)
}

/// The API's resolved compute for an opened device and dtype (what a local run plans with).
pub fn resolved_of(c: &Compute) -> pruneforge_api::spec::ResolvedCompute {
    use pruneforge_api::spec::{ComputeDevice, ComputeDtype, ResolvedCompute};
    ResolvedCompute {
        device: if c.device.is_cuda() {
            ComputeDevice::Cuda
        } else {
            ComputeDevice::Cpu
        },
        dtype: match c.dtype {
            DType::BF16 => ComputeDtype::Bf16,
            DType::F16 => ComputeDtype::F16,
            _ => ComputeDtype::F32,
        },
    }
}

/// Peak resident memory of this process (`VmHWM` of /proc/self/status; Linux only).
pub fn peak_host_memory_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident memory of this process now (`VmRSS`; Linux only).
pub fn host_memory_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Short name of a dtype as the flags spell it.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F64 => "f64",
        _ => "other",
    }
}

/// What a report says about a device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// GPU name from the driver (CUDA only).
    pub name: Option<String>,
    /// Total device memory in bytes (CUDA only).
    pub total_bytes: Option<u64>,
}

pub fn describe(device: &Device) -> DeviceInfo {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let ctx = d.cuda_stream().context().clone();
            DeviceInfo {
                device: format!("cuda:{}", ctx.ordinal()),
                name: ctx.name().ok(),
                total_bytes: ctx.total_mem().ok().map(|b| b as u64),
            }
        }
        Device::Cpu => DeviceInfo {
            device: "cpu".into(),
            name: None,
            total_bytes: None,
        },
        other => DeviceInfo {
            device: format!("{:?}", other.location()),
            name: None,
            total_bytes: None,
        },
    }
}

/// Waits for queued device work (a no-op on the CPU); timings must call it before reading
/// the clock.
pub fn synchronize(device: &Device) -> Result<(), DeviceError> {
    Ok(device.synchronize()?)
}

/// Bytes in use on the device (whole device, as the driver reports it), CUDA only.
pub fn device_used_bytes(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let ctx = d.cuda_stream().context().clone();
            ctx.mem_get_info()
                .ok()
                .map(|(free, total)| total.saturating_sub(free) as u64)
        }
        _ => None,
    }
}

/// Samples the device's used memory every millisecond on a background thread and keeps the
/// maximum: the peak device memory of what runs in between (the driver's view, so it includes
/// the CUDA context and anything else on the GPU; `baseline_bytes` is the use at the start).
pub struct MemoryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
    baseline: u64,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemoryPeak {
    pub baseline_bytes: u64,
    pub peak_bytes: u64,
}

impl MemoryWatch {
    /// `None` where the device cannot report its memory (the CPU).
    pub fn start(device: &Device) -> Option<Self> {
        let baseline = device_used_bytes(device)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dev = device.clone();
        let handle = std::thread::Builder::new()
            .name("mem-watch".into())
            .spawn(move || {
                let mut peak = baseline;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(u) = device_used_bytes(&dev) {
                        peak = peak.max(u);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                if let Some(u) = device_used_bytes(&dev) {
                    peak = peak.max(u);
                }
                peak
            })
            .ok()?;
        Some(Self {
            stop,
            handle: Some(handle),
            baseline,
        })
    }

    /// Stops the watch and returns the peak.
    pub fn finish(mut self) -> MemoryPeak {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or(self.baseline);
        MemoryPeak {
            baseline_bytes: self.baseline,
            peak_bytes: peak,
        }
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["cuda:", "cuda:x", "tpu", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("invalid device"), "{bad}: {e}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn parses_dtypes_and_resolves_auto() {
        assert_eq!("bf16".parse::<DTypeSpec>().unwrap(), DTypeSpec::Bf16);
        assert_eq!("F16".parse::<DTypeSpec>().unwrap(), DTypeSpec::F16);
        assert_eq!("f32".parse::<DTypeSpec>().unwrap(), DTypeSpec::F32);
        assert!("int8".parse::<DTypeSpec>().is_err());
        assert_eq!(resolve_dtype(DTypeSpec::Auto, &Device::Cpu), DType::F32);
        assert_eq!(resolve_dtype(DTypeSpec::Bf16, &Device::Cpu), DType::BF16);
        assert_eq!(resolve_dtype(DTypeSpec::F16, &Device::Cpu), DType::F16);
    }

    #[test]
    fn cpu_resolves_and_cuda_errors_are_clear() {
        let (d, t) = resolve(DeviceSpec::Cpu, DTypeSpec::Auto).unwrap();
        assert!(d.is_cpu());
        assert_eq!(t, DType::F32);
        if cuda_device_count() == 0 {
            let (d, _) = resolve(DeviceSpec::Auto, DTypeSpec::Auto).unwrap();
            assert!(d.is_cpu(), "auto without a visible GPU is the CPU");
            let e = resolve_device(DeviceSpec::Cuda(0)).unwrap_err().to_string();
            if cfg!(feature = "cuda") {
                assert!(e.contains("0 CUDA device(s) are visible"), "{e}");
            } else {
                assert!(e.contains("without the `cuda` feature"), "{e}");
            }
        }
        assert!(MemoryWatch::start(&Device::Cpu).is_none());
        assert_eq!(describe(&Device::Cpu).device, "cpu");
    }
}
