//! Where and in which precision the stages compute: `spec.compute`.
//!
//! Unlike `runner`, the precision changes a stage's output (bf16 logits differ from f32 ones),
//! so the resolved dtype of a model-computing stage is part of its cache key whenever it is
//! not f32. The device is not: the same dtype on the CPU or a GPU gives the same result up to
//! rounding.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.compute.device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDevice {
    /// CUDA when the stage pods get GPUs (`runner.gpu.count > 0`), else the CPU. A local
    /// `pruneforge run` takes `--device` (default auto: the first visible CUDA device).
    #[default]
    Auto,
    /// The CPU (fused f32 kernels).
    Cpu,
    /// The pod's first CUDA device.
    Cuda,
}

/// `spec.compute.dtype`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// bf16 on CUDA, f32 on the CPU.
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    /// The name the runner's `--dtype` flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeDtype::Auto => "auto",
            ComputeDtype::F32 => "f32",
            ComputeDtype::Bf16 => "bf16",
            ComputeDtype::F16 => "f16",
        }
    }
}

impl ComputeDevice {
    /// The name the runner's `--device` flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeDevice::Auto => "auto",
            ComputeDevice::Cpu => "cpu",
            ComputeDevice::Cuda => "cuda",
        }
    }
}

/// Device and precision of the model-computing stages (score, distill, finetune, eval,
/// speculate). Prune, merge and import stream tensors on the CPU whatever is set here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSpec {
    /// auto, cpu or cuda.
    #[serde(default)]
    pub device: ComputeDevice,
    /// auto, f32, bf16 or f16 (the weights and activations; LoRA weights, optimizer state and
    /// losses stay f32).
    #[serde(default)]
    pub dtype: ComputeDtype,
}

/// What a plan runs with: `auto` resolved against the pods' GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedCompute {
    /// cpu or cuda; `auto` only where the plan cannot know (a local run decides).
    pub device: ComputeDevice,
    /// f32, bf16 or f16; `auto` only together with an `auto` device.
    pub dtype: ComputeDtype,
}

impl ComputeSpec {
    /// Resolves `auto` for pods with `gpus` GPUs each: `gpus > 0` means CUDA and bf16, none
    /// the CPU and f32. `gpus = None` (a local run, where only the runner sees the machine)
    /// leaves an `auto` device as is.
    pub fn resolve(&self, gpus: Option<u32>) -> ResolvedCompute {
        let device = match (self.device, gpus) {
            (ComputeDevice::Auto, Some(0)) => ComputeDevice::Cpu,
            (ComputeDevice::Auto, Some(_)) => ComputeDevice::Cuda,
            (d, _) => d,
        };
        let dtype = match (self.dtype, device) {
            (ComputeDtype::Auto, ComputeDevice::Cuda) => ComputeDtype::Bf16,
            (ComputeDtype::Auto, ComputeDevice::Cpu) => ComputeDtype::F32,
            (t, _) => t,
        };
        ResolvedCompute { device, dtype }
    }
}

impl ResolvedCompute {
    /// The CPU in f32: what a request without `compute` means.
    pub fn is_cpu_f32(&self) -> bool {
        self.device == ComputeDevice::Cpu && self.dtype == ComputeDtype::F32
    }

    /// The dtype entered into the cache key of a model-computing stage: `None` for f32 (keys
    /// of f32 runs are those of earlier versions) and for an unresolved `auto`.
    pub fn key_dtype(&self) -> Option<&'static str> {
        match self.dtype {
            ComputeDtype::F32 | ComputeDtype::Auto => None,
            t => Some(t.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_pods_gpus() {
        let auto = ComputeSpec::default();
        assert_eq!(
            auto.resolve(Some(1)),
            ResolvedCompute {
                device: ComputeDevice::Cuda,
                dtype: ComputeDtype::Bf16
            }
        );
        assert_eq!(
            auto.resolve(Some(0)),
            ResolvedCompute {
                device: ComputeDevice::Cpu,
                dtype: ComputeDtype::F32
            }
        );
        assert_eq!(auto.resolve(None).device, ComputeDevice::Auto);
        assert_eq!(auto.resolve(None).key_dtype(), None);
        let f32_on_gpu = ComputeSpec {
            device: ComputeDevice::Auto,
            dtype: ComputeDtype::F32,
        };
        assert_eq!(f32_on_gpu.resolve(Some(2)).key_dtype(), None);
        let bf16_cpu = ComputeSpec {
            device: ComputeDevice::Cpu,
            dtype: ComputeDtype::Bf16,
        };
        assert_eq!(bf16_cpu.resolve(Some(1)).device, ComputeDevice::Cpu);
        assert_eq!(bf16_cpu.resolve(Some(1)).key_dtype(), Some("bf16"));
    }

    #[test]
    fn parses_the_yaml_spelling() {
        let c: ComputeSpec = serde_json::from_str(r#"{"device":"cuda","dtype":"bf16"}"#).unwrap();
        assert_eq!(c.device, ComputeDevice::Cuda);
        assert_eq!(c.dtype, ComputeDtype::Bf16);
        assert!(serde_json::from_str::<ComputeSpec>(r#"{"device":"tpu"}"#).is_err());
    }
}
