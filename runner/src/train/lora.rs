//! LoRA adapters: parameters, creation (PEFT initialisation), attaching them to the model,
//! and PEFT-format IO (`adapter_config.json` + `adapter_model.safetensors`).
//!
//! Initialisation follows PEFT's default: `A ~ kaiming_uniform_(a = sqrt(5))`, i.e.
//! `U(-1/sqrt(in), 1/sqrt(in))`, and `B = 0`, so training starts from the base model.
//! Scale is `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.

use super::error::{Result, TrainError};
use super::tensor_io::{self, NamedTensor};
use crate::model::linear::LoraAdapter;
use crate::model::llama::PROJECTIONS;
use crate::model::Llama;
use crate::util::fs::write_json_atomic;
use crate::util::rng::{mix, SplitMix64};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// LoRA shape and placement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraParams {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout on the adapter input during training.
    pub dropout: f64,
    /// Projections that get an adapter (HF names: q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj).
    pub target_modules: Vec<String>,
    /// Rank-stabilised scaling `alpha / sqrt(r)` instead of `alpha / r`.
    pub rslora: bool,
    /// QLoRA: the base projections stay quantized in this format while the adapters train.
    /// Not written when unset, so float-base fingerprints and checkpoints stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_quantization: Option<crate::model::quant::BaseQuantization>,
}

impl Default for LoraParams {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: PROJECTIONS.iter().map(|s| s.to_string()).collect(),
            rslora: false,
            base_quantization: None,
        }
    }
}

impl LoraParams {
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// The adapter shape a resource asks for (`spec.recovery.lora`).
    pub fn from_spec(spec: &pruneforge_api::spec::LoraSpec) -> Self {
        LoraParams {
            rank: spec.rank as usize,
            alpha: spec.alpha,
            dropout: spec.dropout,
            target_modules: spec
                .target_modules
                .iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            rslora: spec.rslora,
            base_quantization: spec.base_quantization,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(TrainError::Input("lora.rank must be at least 1".into()));
        }
        if !self.alpha.is_finite() || self.alpha < 0.0 {
            return Err(TrainError::Input(format!(
                "lora.alpha must be a non-negative number, got {}",
                self.alpha
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::Input(format!(
                "lora.dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.target_modules.is_empty() {
            return Err(TrainError::Input(format!(
                "lora.target_modules is empty; name at least one of: {}",
                PROJECTIONS.join(", ")
            )));
        }
        for m in &self.target_modules {
            if !PROJECTIONS.contains(&m.as_str()) {
                return Err(TrainError::Input(format!(
                    "LoRA target `{m}` does not exist in this model; valid targets: {}",
                    PROJECTIONS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The targets in the model's projection order, without duplicates.
    pub fn targets(&self) -> Vec<&'static str> {
        PROJECTIONS
            .iter()
            .copied()
            .filter(|p| self.target_modules.iter().any(|m| m == p))
            .collect()
    }

    /// Trainable parameters on a model of shape `cfg`: `rank · (in + out)` per targeted
    /// projection of every layer.
    pub fn parameter_count(&self, cfg: &crate::model::config::ModelConfig) -> u64 {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let q = cfg.num_attention_heads * cfg.head_dim;
        let kv = cfg.num_key_value_heads * cfg.head_dim;
        let per_layer: usize = self
            .targets()
            .iter()
            .map(|m| match *m {
                "q_proj" => h + q,
                "k_proj" | "v_proj" => h + kv,
                "o_proj" => q + h,
                "gate_proj" | "up_proj" => h + i,
                _ => i + h,
            })
            .sum();
        (self.rank * per_layer * cfg.num_hidden_layers) as u64
    }
}

/// One adapter: `A [r, in]` and `B [out, r]` on projection `module` of layer `layer`.
pub struct Adapter {
    pub layer: usize,
    pub module: &'static str,
    pub a: Var,
    pub b: Var,
}

/// `base_model.model.model.layers.N.<group>.<module>` (PEFT's module path).
pub fn peft_prefix(layer: usize, module: &str) -> String {
    let group = if matches!(module, "gate_proj" | "up_proj" | "down_proj") {
        "mlp"
    } else {
        "self_attn"
    };
    format!("base_model.model.model.layers.{layer}.{group}.{module}")
}

/// All adapters of a model.
pub struct LoraSet {
    pub params: LoraParams,
    pub adapters: Vec<Adapter>,
}

fn var_values(v: &Var) -> Result<Vec<f32>> {
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

impl LoraSet {
    /// Fresh adapters (PEFT initialisation) on every targeted projection of every layer.
    pub fn init(model: &Llama, params: &LoraParams, seed: u64) -> Result<Self> {
        params.validate()?;
        let device = model.device().clone();
        let r = params.rank;
        let mut adapters = Vec::new();
        for (li, layer) in model.layers.iter().enumerate() {
            for module in params.targets() {
                let lin = Llama::projection(layer, module)?;
                let part = lin
                    .part_index(module)
                    .ok_or_else(|| TrainError::Input(format!("layer {li} has no `{module}`")))?;
                let (in_dim, out_dim) = (lin.in_dim()?, lin.parts[part].rows.len());
                let module_index = PROJECTIONS.iter().position(|p| *p == module).unwrap_or(0);
                let mut rng = SplitMix64::derive(seed, mix(li as u64, module_index as u64));
                let bound = 1.0 / (in_dim as f64).sqrt();
                let a: Vec<f32> = (0..r * in_dim)
                    .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (r, in_dim), &device)?)?;
                // LoRA weights (and so their AdamW state) stay f32 whatever the base's dtype.
                let b = Var::from_tensor(&Tensor::zeros((out_dim, r), DType::F32, &device)?)?;
                adapters.push(Adapter {
                    layer: li,
                    module,
                    a,
                    b,
                });
            }
        }
        Ok(Self {
            params: params.clone(),
            adapters,
        })
    }

    /// Hooks every adapter into `model` (replacing earlier ones). `dropout_seed` seeds the
    /// dropout masks of the next forward pass (each adapter gets its own sub-seed).
    pub fn attach(&self, model: &mut Llama, dropout_seed: u64) -> Result<()> {
        let scale = self.params.scale();
        for (i, ad) in self.adapters.iter().enumerate() {
            model.set_lora(
                ad.layer,
                ad.module,
                Some(LoraAdapter {
                    a: ad.a.as_tensor().clone(),
                    b: ad.b.as_tensor().clone(),
                    scale,
                    dropout: self.params.dropout as f32,
                    dropout_seed: mix(dropout_seed, i as u64),
                }),
            )?;
        }
        Ok(())
    }

    /// Removes the adapters from `model`.
    pub fn detach(&self, model: &mut Llama) -> Result<()> {
        for ad in &self.adapters {
            model.set_lora(ad.layer, ad.module, None)?;
        }
        Ok(())
    }

    /// The trainable variables, `A` then `B` for each adapter in order.
    pub fn vars(&self) -> Vec<&Var> {
        self.adapters.iter().flat_map(|a| [&a.a, &a.b]).collect()
    }

    /// Element counts of [`Self::vars`].
    pub fn sizes(&self) -> Vec<usize> {
        self.vars().iter().map(|v| v.elem_count()).collect()
    }

    pub fn trainable_params(&self) -> usize {
        self.sizes().iter().sum()
    }

    /// Current values of [`Self::vars`].
    pub fn values(&self) -> Result<Vec<Vec<f32>>> {
        self.vars().into_iter().map(var_values).collect()
    }

    /// Overwrites the variables with `values` (same order and sizes as [`Self::vars`]).
    pub fn set_values(&self, values: &[Vec<f32>]) -> Result<()> {
        let vars = self.vars();
        if vars.len() != values.len() {
            return Err(TrainError::Input(format!(
                "{} value buffers for {} LoRA variables",
                values.len(),
                vars.len()
            )));
        }
        for (v, vals) in vars.into_iter().zip(values) {
            let t = Tensor::from_slice(vals, v.shape(), v.device())?;
            v.set(&t)?;
        }
        Ok(())
    }

    /// PEFT tensor names and values: `<prefix>.lora_A.weight [r, in]`,
    /// `<prefix>.lora_B.weight [out, r]`.
    pub fn peft_tensors(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::with_capacity(2 * self.adapters.len());
        for ad in &self.adapters {
            let p = peft_prefix(ad.layer, ad.module);
            out.push((
                format!("{p}.lora_A.weight"),
                ad.a.dims().to_vec(),
                var_values(&ad.a)?,
            ));
            out.push((
                format!("{p}.lora_B.weight"),
                ad.b.dims().to_vec(),
                var_values(&ad.b)?,
            ));
        }
        Ok(out)
    }

    /// The adapter config PEFT's `LoraConfig` reads.
    pub fn peft_config(&self, base_model: &str) -> Value {
        let p = &self.params;
        let alpha = if p.alpha.fract() == 0.0 && p.alpha.abs() < 1e15 {
            json!(p.alpha as i64)
        } else {
            json!(p.alpha)
        };
        json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            "lora_alpha": alpha,
            "lora_dropout": p.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": p.rank,
            "rank_pattern": {},
            "revision": null,
            "target_modules": p.targets(),
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": p.rslora,
        })
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`.
    pub fn save_peft(&self, dir: &Path, base_model: &str) -> Result<()> {
        tensor_io::write(&dir.join(ADAPTER_WEIGHTS), &self.peft_tensors()?)?;
        let cfg = dir.join(ADAPTER_CONFIG);
        write_json_atomic(&cfg, &self.peft_config(base_model)).map_err(|e| TrainError::io(&cfg, e))
    }

    /// Reads a PEFT adapter directory written for `model` (shapes are checked).
    pub fn load_peft(model: &Llama, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&cfg_path, format!("not valid JSON: {e}")))?;
        let get_f = |k: &str| cfg.get(k).and_then(Value::as_f64);
        let params = LoraParams {
            rank: get_f("r").ok_or_else(|| TrainError::checkpoint(&cfg_path, "missing `r`"))?
                as usize,
            alpha: get_f("lora_alpha")
                .ok_or_else(|| TrainError::checkpoint(&cfg_path, "missing `lora_alpha`"))?,
            dropout: get_f("lora_dropout").unwrap_or(0.0),
            target_modules: cfg
                .get("target_modules")
                .and_then(Value::as_array)
                .ok_or_else(|| TrainError::checkpoint(&cfg_path, "missing `target_modules`"))?
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            rslora: cfg
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            base_quantization: None,
        };
        params.validate()?;
        let set = Self::init(model, &params, 0)?;
        let tensors = tensor_io::read(&dir.join(ADAPTER_WEIGHTS))?;
        set.load_named(&tensors, &dir.join(ADAPTER_WEIGHTS))?;
        Ok(set)
    }

    /// Sets the variables from PEFT-named tensors.
    pub fn load_named(&self, tensors: &super::tensor_io::TensorMap, origin: &Path) -> Result<()> {
        let mut values = Vec::new();
        for ad in &self.adapters {
            let p = peft_prefix(ad.layer, ad.module);
            for (suffix, var) in [("lora_A", &ad.a), ("lora_B", &ad.b)] {
                let name = format!("{p}.{suffix}.weight");
                let (shape, v) = tensors.get(&name).ok_or_else(|| {
                    TrainError::checkpoint(origin, format!("tensor `{name}` is missing"))
                })?;
                if shape.as_slice() != var.dims() {
                    return Err(TrainError::checkpoint(
                        origin,
                        format!(
                            "tensor `{name}` has shape {shape:?}, the model needs {:?}",
                            var.dims()
                        ),
                    ));
                }
                values.push(v.clone());
            }
        }
        self.set_values(&values)
    }
}
