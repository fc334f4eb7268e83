//! Stage `merge`: SLERP or linear interpolation of fine-tuned models of the same shape, tensor
//! by tensor, with mergekit's semantics (see the submodules for the sources they follow).
//!
//! Inputs are HF directories (or `.gguf` files, imported first). The first model, or `base`,
//! is mergekit's `base_model`: the `t = 0` end of a SLERP, and the source of `config.json`,
//! the tokenizer files, the chat template and `generation_config.json`, which are copied
//! unchanged. Each merged tensor is stored in the dtype the base model stores it in. The output
//! directory is a loadable HF model directory plus `merge.json` (inputs with digests, the
//! resolved parameters, and per tensor: `t`, the cosine of the two tensors, whether SLERP fell
//! back to linear interpolation); it is built in a temporary sibling and renamed into place.
//!
//! Methods:
//! - `slerp`: exactly two models; `t` per tensor as in [`schedule`].
//! - `linear` with `weights`: mergekit `linear`, `Σ wᵢ·xᵢ / Σ wᵢ` (or not normalised).
//! - `linear` without `weights`: two models are mixed as `(1 - t)·a + t·b` (mergekit `lerp`,
//!   `t` resolved per tensor as for slerp); more models are averaged with equal weights.

pub mod compat;
pub mod inputs;
pub mod linear;
pub mod schedule;
pub mod shards;
pub mod slerp;

pub use schedule::{FilteredT, ResolvedT, TValue, TensorPosition};

use crate::loader::hf_dir::MAX_SHARD_BYTES;
use crate::model::safetensors_io::{encode_f32, RawTensor, SaveDtype};
use crate::stages::{model_dir_of, Outcome, Result, StageContext, StageError};
use crate::util::fs::{write_json_atomic, StagingDir};
use inputs::{FileDigest, ModelInput};
use pruneforge_api::contract::{self, StageSummary};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The report written next to the merged weights.
pub const REPORT_FILE: &str = "merge.json";

pub use pruneforge_api::spec::MergeMethod;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeParams {
    #[serde(default)]
    pub method: MergeMethod,
    /// Interpolation factor (0 keeps the base model, 1 the other): a number, a gradient over
    /// the layers, or filtered values (see [`TValue`]). Used by slerp and by linear without
    /// weights on two models.
    #[serde(default)]
    pub t: TValue,
    /// Linear: one weight per model, in merge order (base first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// Linear with weights: divide by the sum of the weights (mergekit's default).
    #[serde(default = "default_normalize")]
    pub normalize: bool,
}

fn default_normalize() -> bool {
    true
}

impl Default for MergeParams {
    fn default() -> Self {
        Self {
            method: MergeMethod::default(),
            t: TValue::default(),
            weights: None,
            normalize: true,
        }
    }
}

/// The compact result of the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeSummary {
    pub method: MergeMethod,
    /// The base model (`t = 0`, source of config and tokenizer).
    pub base: String,
    /// All inputs in merge order (base first).
    pub models: Vec<String>,
    /// Tensors merged.
    pub tensors: usize,
    /// Tensors where slerp fell back to linear interpolation (nearly colinear).
    pub fallback_count: usize,
    /// `t` per position, when `t` was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_resolved: Option<Vec<ResolvedT>>,
    /// The weights used by a weighted linear merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
}

/// One input of `merge.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    pub path: String,
    /// The HF directory read (differs from `path` for an imported `.gguf`).
    pub dir: String,
    /// SHA-256 over the file digests (see [`inputs::model_digest`]).
    pub digest: String,
    pub files: Vec<FileDigest>,
}

/// One tensor of `merge.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// Slerp: dot product of the normalised tensors (their cosine similarity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosine: Option<f64>,
    pub lerp_fallback: bool,
}

/// `merge.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    pub method: MergeMethod,
    pub params: MergeParams,
    pub inputs: Vec<InputRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_resolved: Option<Vec<ResolvedT>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    pub total_tensors: usize,
    pub fallback_count: usize,
    pub fallback_tensors: Vec<String>,
    pub weight_files: Vec<String>,
    pub tensors: Vec<TensorRecord>,
}

/// How the tensors of the inputs are combined.
enum Mix {
    /// Two models, `t` per tensor.
    Slerp,
    /// Two models, `(1 - t)·a + t·b` with `t` per tensor.
    Lerp,
    /// `Σ wᵢ·xᵢ` (divided by `Σ wᵢ` when normalising).
    Weighted { weights: Vec<f64>, normalize: bool },
}

impl Mix {
    fn uses_t(&self) -> bool {
        matches!(self, Self::Slerp | Self::Lerp)
    }
}

fn input_err(msg: impl Into<String>) -> StageError {
    StageError::Input(msg.into())
}

fn choose_mix(params: &MergeParams, n: usize) -> Result<Mix> {
    match params.method {
        MergeMethod::Slerp => {
            if n != 2 {
                return Err(input_err(format!(
                    "slerp merges exactly 2 models, got {n} (a base that is not among the \
                     models counts as one more input); use method linear for more"
                )));
            }
            if params.weights.is_some() {
                return Err(input_err(
                    "weights apply to method linear; slerp is controlled by t",
                ));
            }
            params.t.validate().map_err(input_err)?;
            Ok(Mix::Slerp)
        }
        MergeMethod::Linear => {
            if n < 2 {
                return Err(input_err(format!(
                    "linear merges 2 or more models, got {n}"
                )));
            }
            match &params.weights {
                Some(w) => {
                    if w.len() != n {
                        return Err(input_err(format!(
                            "weights has {} values for {n} models (one per model, base first)",
                            w.len()
                        )));
                    }
                    if let Some(v) = w.iter().find(|v| !v.is_finite()) {
                        return Err(input_err(format!("weights must be finite, got {v}")));
                    }
                    if params.normalize && w.iter().sum::<f64>() as f32 == 0.0 {
                        return Err(input_err(
                            "weights sum to 0 and cannot be normalised; change them or set normalize: false",
                        ));
                    }
                    Ok(Mix::Weighted {
                        weights: w.clone(),
                        normalize: params.normalize,
                    })
                }
                None if n == 2 => {
                    params.t.validate().map_err(input_err)?;
                    Ok(Mix::Lerp)
                }
                None => Ok(Mix::Weighted {
                    weights: vec![1.0; n],
                    normalize: true,
                }),
            }
        }
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The inputs in merge order: `base` first (moved there if it is among `models`, added
/// otherwise, as mergekit adds a `base_model` missing from its models).
fn merge_order(models: &[PathBuf], base: Option<&Path>) -> Result<Vec<PathBuf>> {
    if models.is_empty() {
        return Err(input_err("no models to merge"));
    }
    let mut order = models.to_vec();
    if let Some(b) = base {
        match order.iter().position(|m| same_path(m, b)) {
            Some(i) => {
                let m = order.remove(i);
                order.insert(0, m);
            }
            None => order.insert(0, b.to_path_buf()),
        }
    }
    Ok(order)
}

/// Refuses to replace an input or a directory that is not an earlier merge output.
fn check_out_dir(out_dir: &Path, inputs: &[ModelInput]) -> Result<()> {
    if !out_dir.exists() {
        return Ok(());
    }
    if inputs.iter().any(|m| same_path(&m.dir, out_dir)) {
        return Err(input_err(format!(
            "the output directory {} is one of the inputs; choose another",
            out_dir.display()
        )));
    }
    if !out_dir.is_dir() {
        return Err(input_err(format!(
            "the output path {} exists and is not a directory",
            out_dir.display()
        )));
    }
    let mut entries = std::fs::read_dir(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    if entries.next().is_some() && !out_dir.join(REPORT_FILE).exists() {
        return Err(input_err(format!(
            "the output directory {} is not empty and holds no earlier merge ({REPORT_FILE}); \
             refusing to replace it: choose a new or empty directory",
            out_dir.display()
        )));
    }
    Ok(())
}

fn save_dtype(stored: Option<Dtype>) -> SaveDtype {
    match stored {
        Some(Dtype::BF16) => SaveDtype::BF16,
        Some(Dtype::F16) => SaveDtype::F16,
        _ => SaveDtype::F32,
    }
}

struct TensorPlan {
    name: String,
    shape: Vec<usize>,
    dtype: SaveDtype,
    t: Option<f64>,
}

fn plan_tensors(base: &ModelInput, params: &MergeParams, mix: &Mix) -> Result<Vec<TensorPlan>> {
    let layers = base.config.num_hidden_layers;
    base.weights
        .names()
        .into_iter()
        .map(|name| {
            if let TensorPosition::Layer(i) = TensorPosition::of(&name).map_err(input_err)? {
                if i >= layers {
                    return Err(input_err(format!(
                        "{}: tensor `{name}` belongs to layer {i} but config.json says \
                         num_hidden_layers = {layers}",
                        base.label()
                    )));
                }
            }
            let shape = base.weights.shape(&name).unwrap_or_default();
            let dtype = save_dtype(base.weights.stored_dtype(&name));
            let t = if mix.uses_t() {
                Some(params.t.for_tensor(&name, layers).map_err(input_err)?)
            } else {
                None
            };
            Ok(TensorPlan {
                name,
                shape,
                dtype,
                t,
            })
        })
        .collect()
}

fn dtype_bytes(d: SaveDtype) -> usize {
    match d {
        SaveDtype::F32 => 4,
        SaveDtype::F16 | SaveDtype::BF16 => 2,
    }
}

fn load_finite(m: &ModelInput, name: &str) -> Result<Vec<f32>> {
    let (values, _) = m.weights.load_f32(name)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(input_err(format!(
            "{}: tensor `{name}` has a non-finite value ({}) at element {i}; refusing to merge \
             NaN or infinite weights",
            m.label(),
            values[i]
        )));
    }
    Ok(values)
}

/// Merges one tensor; returns the values and (cosine, lerp fallback) for slerp.
fn merge_tensor(
    plan: &TensorPlan,
    inputs: &[ModelInput],
    mix: &Mix,
) -> Result<(Vec<f32>, Option<f64>, bool)> {
    let values: Vec<Vec<f32>> = inputs
        .iter()
        .map(|m| load_finite(m, &plan.name))
        .collect::<Result<_>>()?;
    let t = plan.t.unwrap_or_default();
    Ok(match mix {
        Mix::Slerp => {
            let (out, b) = slerp::slerp(t, &values[0], &values[1]);
            (out, Some(b.dot), b.lerp_fallback)
        }
        Mix::Lerp => {
            let b = slerp::lerp_blend(t, f64::NAN);
            (slerp::apply(&b, &values[0], &values[1]), None, false)
        }
        Mix::Weighted { weights, normalize } => {
            let refs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            (
                linear::weighted_sum(weights, &refs, *normalize),
                None,
                false,
            )
        }
    })
}

/// Merges `models` (HF directories or `.gguf` files) into an HF directory at `out_dir`.
/// `base` is the `t = 0` model and the source of config and tokenizer (default: the first).
pub fn run(
    models: &[PathBuf],
    base: Option<&Path>,
    params: &MergeParams,
    out_dir: &Path,
) -> Result<MergeSummary> {
    let order = merge_order(models, base)?;
    let mix = choose_mix(params, order.len())?;
    let inputs: Vec<ModelInput> = order
        .iter()
        .map(|p| ModelInput::open(p))
        .collect::<Result<_>>()?;
    let base = &inputs[0];
    for other in &inputs[1..] {
        compat::check_pair(base, other)?;
    }
    check_out_dir(out_dir, &inputs)?;
    let plans = plan_tensors(base, params, &mix)?;
    tracing::info!(
        method = params.method.as_str(),
        models = inputs.len(),
        tensors = plans.len(),
        base = %base.label(),
        out = %out_dir.display(),
        "merging"
    );

    let mut records = Vec::with_capacity(inputs.len());
    for m in &inputs {
        let files = m.file_digests()?;
        records.push(InputRecord {
            path: m.label(),
            dir: m.dir.display().to_string(),
            digest: inputs::model_digest(&files),
            files,
        });
    }

    let staging = StagingDir::new(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    let dir = staging.path().to_path_buf();
    for name in inputs::SIDE_FILES {
        let src = base.dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, dir.join(name)).map_err(|e| StageError::io(&src, e))?;
        }
    }

    let sizes: Vec<usize> = plans
        .iter()
        .map(|p| p.shape.iter().product::<usize>() * dtype_bytes(p.dtype))
        .collect();
    let shard_ranges = shards::plan(&sizes, MAX_SHARD_BYTES);
    let mut writer = shards::ShardWriter::new(&dir, shard_ranges.len());
    let mut tensor_records = Vec::with_capacity(plans.len());
    for range in shard_ranges {
        let mut encoded: Vec<(String, RawTensor)> = Vec::with_capacity(range.len());
        for plan in &plans[range] {
            let (values, cosine, lerp_fallback) = merge_tensor(plan, &inputs, &mix)?;
            let mut raw = encode_f32(&values, plan.dtype);
            raw.shape = plan.shape.clone();
            encoded.push((plan.name.clone(), raw));
            tracing::debug!(tensor = %plan.name, t = ?plan.t, ?cosine, lerp_fallback, "merged");
            tensor_records.push(TensorRecord {
                name: plan.name.clone(),
                shape: plan.shape.clone(),
                dtype: plan.dtype.torch_name().into(),
                t: plan.t,
                cosine,
                lerp_fallback,
            });
        }
        writer.write(&encoded)?;
    }
    let weight_files = writer.finish()?;

    let fallback_tensors: Vec<String> = tensor_records
        .iter()
        .filter(|r| r.lerp_fallback)
        .map(|r| r.name.clone())
        .collect();
    let t_resolved = mix
        .uses_t()
        .then(|| params.t.resolved(base.config.num_hidden_layers));
    let weights = match &mix {
        Mix::Weighted { weights, .. } => Some(weights.clone()),
        _ => None,
    };
    let report = MergeReport {
        method: params.method,
        params: params.clone(),
        inputs: records,
        t_resolved: t_resolved.clone(),
        weights: weights.clone(),
        total_tensors: tensor_records.len(),
        fallback_count: fallback_tensors.len(),
        fallback_tensors,
        weight_files,
        tensors: tensor_records,
    };
    let report_path = dir.join(REPORT_FILE);
    write_json_atomic(&report_path, &report).map_err(|e| StageError::io(&report_path, e))?;
    staging.commit().map_err(|e| StageError::io(out_dir, e))?;
    tracing::info!(
        tensors = report.total_tensors,
        fallback = report.fallback_count,
        out = %out_dir.display(),
        "merged"
    );
    Ok(MergeSummary {
        method: params.method,
        base: base.label(),
        models: inputs.iter().map(ModelInput::label).collect(),
        tensors: report.total_tensors,
        fallback_count: report.fallback_count,
        t_resolved,
        weights,
    })
}

/// The stage contract's `merge`: inputs `model-0`, `model-1`, … in order (the first is
/// mergekit's `t = 0` end).
pub fn run_request(p: &pruneforge_api::params::MergeParams, ctx: &StageContext) -> Result<Outcome> {
    let mut models = Vec::new();
    for i in 0.. {
        match ctx.inputs.get(&format!("model-{i}")) {
            Some(m) => models.push(model_dir_of(m)?),
            None => break,
        }
    }
    let t = if p.t_gradient.is_empty() {
        TValue::Scalar(p.t)
    } else {
        TValue::List(p.t_gradient.clone())
    };
    let params = MergeParams {
        method: p.method,
        t,
        weights: None,
        normalize: true,
    };
    let s = run(&models, None, &params, ctx.out)?;
    Ok(Outcome::new(
        StageSummary::Merge(contract::MergeSummary {
            tensors: s.tensors as u64,
            fallback_count: s.fallback_count as u64,
        }),
        &["config.json", "merge.json"],
    ))
}
