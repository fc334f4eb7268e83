//! Seeded random weights for any Llama-family shape, for benchmarks and memory tests of shapes
//! that cannot be downloaded (`bench … --config <config.json> --random-weights`).
//!
//! Every tensor is a pure function of (seed, tensor name, element index), generated in parallel
//! straight into the target dtype on the host, one tensor at a time, and moved to the device:
//! the same seed gives the same model on every device (what the CPU-vs-GPU checks rely on), and
//! host memory never holds more than one tensor.

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::llama::{Llama, WeightSource};
use crate::generate::SplitMix64;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// Standard deviation of projection and embedding weights (transformers' `initializer_range`).
pub const INIT_STD: f32 = 0.02;

/// Values per independently seeded block (parallel generation stays deterministic).
const BLOCK: usize = 1 << 16;

pub struct RandomWeights {
    config: ModelConfig,
    seed: u64,
    dtype: DType,
    device: Device,
}

/// FNV-1a, to give every tensor name its own stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How a tensor is initialised.
#[derive(Clone, Copy)]
enum Init {
    /// Uniform with mean 0 and standard deviation `std`.
    Uniform { std: f32 },
    /// `1 + uniform(±spread)` (norm weights).
    AroundOne { spread: f32 },
}

impl RandomWeights {
    pub fn new(config: ModelConfig, seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            config,
            seed,
            dtype,
            device: device.clone(),
        }
    }

    /// Shape and initialisation of an HF-named tensor, or `None` if the model has no such tensor.
    fn spec(&self, name: &str) -> Option<(Vec<usize>, Init)> {
        let c = &self.config;
        let (h, q, kv, i, v) = (
            c.hidden_size,
            c.q_dim(),
            c.kv_dim(),
            c.intermediate_size,
            c.vocab_size,
        );
        let w = Init::Uniform { std: INIT_STD };
        let bias = Init::Uniform { std: INIT_STD };
        let norm = Init::AroundOne { spread: 0.1 };
        match name {
            "model.embed_tokens.weight" => return Some((vec![v, h], w)),
            "model.norm.weight" => return Some((vec![h], norm)),
            "lm_head.weight" if !c.tie_word_embeddings => return Some((vec![v, h], w)),
            _ => {}
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        if layer.parse::<usize>().ok()? >= c.num_hidden_layers {
            return None;
        }
        Some(match rest {
            "input_layernorm.weight" | "post_attention_layernorm.weight" => (vec![h], norm),
            "self_attn.q_proj.weight" => (vec![q, h], w),
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => (vec![kv, h], w),
            "self_attn.o_proj.weight" => (vec![h, q], w),
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => (vec![i, h], w),
            "mlp.down_proj.weight" => (vec![h, i], w),
            "self_attn.q_proj.bias" if c.qkv_bias => (vec![q], bias),
            "self_attn.k_proj.bias" | "self_attn.v_proj.bias" if c.qkv_bias => (vec![kv], bias),
            "self_attn.o_proj.bias" if c.o_bias => (vec![h], bias),
            "mlp.gate_proj.bias" | "mlp.up_proj.bias" if c.mlp_bias => (vec![i], bias),
            "mlp.down_proj.bias" if c.mlp_bias => (vec![h], bias),
            _ => return None,
        })
    }

    fn values<T>(&self, name: &str, n: usize, init: Init, conv: fn(f32) -> T) -> Vec<T>
    where
        T: Copy + Default + Send + Sync,
    {
        let base = self.seed ^ name_hash(name);
        let mut out = vec![T::default(); n];
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(block, chunk)| {
                let mut rng = SplitMix64::for_item(base, block as u64);
                for x in chunk.iter_mut() {
                    // Uniform in [-1, 1): 24 random bits.
                    let u = ((rng.next_u64() >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0;
                    let v = match init {
                        // Uniform on [-a, a] has standard deviation a / sqrt(3).
                        Init::Uniform { std } => u * std * 3f32.sqrt(),
                        Init::AroundOne { spread } => 1.0 + u * spread,
                    };
                    *x = conv(v);
                }
            });
        out
    }
}

impl WeightSource for RandomWeights {
    fn tensor(&mut self, name: &str) -> Result<Tensor> {
        let (shape, init) = self.spec(name).ok_or_else(|| ModelError::Tensor {
            file: "random weights".into(),
            name: name.into(),
            reason: "not a tensor of this model config".into(),
        })?;
        let n = shape.iter().product();
        let t = match self.dtype {
            DType::F32 => Tensor::from_vec(self.values(name, n, init, |v| v), shape, &Device::Cpu)?,
            DType::BF16 => Tensor::from_vec(
                self.values(name, n, init, half::bf16::from_f32),
                shape,
                &Device::Cpu,
            )?,
            DType::F16 => Tensor::from_vec(
                self.values(name, n, init, half::f16::from_f32),
                shape,
                &Device::Cpu,
            )?,
            other => {
                return Err(ModelError::Input(format!(
                    "random weights in {other:?} are not supported (f32, bf16 or f16)"
                )))
            }
        };
        Ok(t.to_device(&self.device)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.spec(name).is_some()
    }
}

/// A model of `config`'s shape with seeded random weights, built in `dtype` on `device`.
pub fn random_model(
    config: ModelConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Llama> {
    let mut w = RandomWeights::new(config.clone(), seed, dtype, device);
    Llama::load(config, &mut w, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny() -> ModelConfig {
        ModelConfig::from_json(
            json!({"architectures":["LlamaForCausalLM"],"hidden_size":32,"intermediate_size":64,
                   "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
                   "vocab_size":300,"rms_norm_eps":1e-5,"tie_word_embeddings":false,
                   "max_position_embeddings":128}),
            "tiny",
        )
        .unwrap()
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = random_model(tiny(), 3, DType::F32, &Device::Cpu).unwrap();
        let b = random_model(tiny(), 3, DType::F32, &Device::Cpu).unwrap();
        let c = random_model(tiny(), 4, DType::F32, &Device::Cpu).unwrap();
        let flat = |m: &Llama| -> Vec<f32> {
            m.layers[1]
                .gate_up
                .weight
                .tensor()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
        let w = flat(&a);
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
        assert!(
            mean.abs() < 2e-3 && (std - INIT_STD).abs() < 2e-3,
            "{mean} {std}"
        );
        assert!(a.lm_head.is_some());
        // bf16 holds the same values, rounded.
        let h = random_model(tiny(), 3, DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(h.dtype(), DType::BF16);
        let hb: Vec<f32> = h.layers[1]
            .gate_up
            .weight
            .tensor()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let max = w
            .iter()
            .zip(&hb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max > 0.0 && max < 1e-3, "{max}");
    }

    #[test]
    fn unknown_tensor_names_are_errors() {
        let mut w = RandomWeights::new(tiny(), 0, DType::F32, &Device::Cpu);
        assert!(w.contains("model.layers.1.mlp.down_proj.weight"));
        assert!(!w.contains("model.layers.2.mlp.down_proj.weight"));
        assert!(!w.contains("model.layers.0.self_attn.q_proj.bias"));
        let e = w.tensor("model.layers.0.foo").unwrap_err().to_string();
        assert!(e.contains("not a tensor of this model config"), "{e}");
    }
}
