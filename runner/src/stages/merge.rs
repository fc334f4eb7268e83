//! Stage `merge`: SLERP, linear interpolation, NuSLERP, task arithmetic or TIES of fine-tuned
//! models of the same shape, tensor by tensor, with mergekit's semantics (see the submodules
//! for the sources they follow).
//!
//! Inputs are HF directories (or `.gguf` files, imported first). `base` is mergekit's
//! `base_model`: for slerp and linear the `t = 0` end (the first model when not given); for the
//! task-vector methods (nuslerp, task-arithmetic, ties) the model the fine-tunes started from
//! (in a job, the pruned model), required and not itself among the merged models. The base is
//! the source of `config.json`, the tokenizer files, the chat template and
//! `generation_config.json`, which are copied unchanged, and each merged tensor is stored in the
//! dtype the base stores it in. The output directory is a loadable HF model directory plus
//! `merge.json` (inputs with digests, the resolved parameters, and per tensor: `t`, the cosine
//! of the two tensors or task vectors, whether (nu)slerp fell back to linear interpolation, the
//! L2 norm of each task vector, and for ties the entries kept per task vector and the entries
//! with a sign conflict); it is built in a temporary sibling and renamed into place.
//!
//! Methods:
//! - `slerp`: exactly two models; `t` per tensor as in [`schedule`].
//! - `linear` with `weights`: mergekit `linear`, `Σ wᵢ·xᵢ / Σ wᵢ` (or not normalised).
//! - `linear` without `weights`: two models are mixed as `(1 - t)·a + t·b` (mergekit `lerp`,
//!   `t` resolved per tensor as for slerp); more models are averaged with equal weights.
//! - `nuslerp`: exactly two models besides the base; `base + slerp(t, x₀ - base, x₁ - base)` on
//!   the flattened task vectors ([`nuslerp`]; `t` per tensor as for slerp).
//! - `task-arithmetic`: `base + λ·Σ wᵢ·(xᵢ - base)`, divided by `Σ wᵢ` only when `normalize`
//!   is set ([`task_arithmetic`]).
//! - `ties`: each task vector sparsified to `density` by magnitude ([`sparsify`]), a sign
//!   elected per entry from `Σ wᵢ·τᵢ`, only agreeing entries summed and (by default) divided by
//!   the weights of the agreeing models, times `λ` ([`task_arithmetic`]).
//!
//! `weights` default to 1 per model, `density` and `lambda` to 1, `normalize` to mergekit's
//! default for the method (true for linear and ties, false for task-arithmetic).

pub mod compat;
pub mod inputs;
pub mod linear;
pub mod nuslerp;
pub mod schedule;
pub mod shards;
pub mod slerp;
pub mod sparsify;
pub mod task_arithmetic;

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
use task_arithmetic::{TaskArithmetic, Ties};

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
    /// One weight per model: linear, in merge order (base first); task-arithmetic and ties,
    /// per fine-tuned model (the base has none). Unset: 1 each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// Divide by the sum of the weights (ties: of the agreeing models). Unset: mergekit's
    /// default, true for linear and ties, false for task-arithmetic; slerp and nuslerp have
    /// no such setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// ties: share of each task vector's entries kept (largest magnitudes), in (0, 1].
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub density: f64,
    /// task-arithmetic, ties: scale of the merged task vector.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub lambda: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for MergeParams {
    fn default() -> Self {
        Self {
            method: MergeMethod::default(),
            t: TValue::default(),
            weights: None,
            normalize: None,
            density: 1.0,
            lambda: 1.0,
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
    /// The weights used by a weighted linear merge, task arithmetic or ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// ties: entries, over all tensors, where a task vector was left out for its sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_conflicts: Option<usize>,
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
    /// slerp: dot product of the normalised tensors (their cosine similarity); nuslerp: of the
    /// normalised task vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosine: Option<f64>,
    pub lerp_fallback: bool,
    /// Task-vector methods: the L2 norm of each task vector `xᵢ - base`, in model order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_vector_norms: Option<Vec<f64>>,
    /// ties: entries each sparsified task vector keeps (`int(density · numel)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_per_model: Option<usize>,
    /// ties: entries where a task vector's non-zero entry disagrees with the elected sign and
    /// is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_conflicts: Option<usize>,
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
    /// The resolved `normalize` of linear with weights, task-arithmetic and ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    pub total_tensors: usize,
    pub fallback_count: usize,
    pub fallback_tensors: Vec<String>,
    /// ties: the sum of the tensors' `sign_conflicts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_sign_conflicts: Option<usize>,
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
    /// Base and two models: slerp of the two task vectors, `t` per tensor.
    Nuslerp,
    /// Base and one or more models: task arithmetic, or TIES.
    TaskVectors(TaskArithmetic),
}

impl Mix {
    fn uses_t(&self) -> bool {
        matches!(self, Self::Slerp | Self::Lerp | Self::Nuslerp)
    }

    /// The weights the merge used, for the report.
    fn weights(&self) -> Option<Vec<f64>> {
        match self {
            Self::Weighted { weights, .. } => Some(weights.clone()),
            Self::TaskVectors(ta) => Some(ta.weights.clone()),
            _ => None,
        }
    }

    /// The resolved `normalize`, for the report.
    fn normalize(&self) -> Option<bool> {
        match self {
            Self::Weighted { normalize, .. } => Some(*normalize),
            Self::TaskVectors(ta) => Some(ta.normalize),
            _ => None,
        }
    }
}

fn input_err(msg: impl Into<String>) -> StageError {
    StageError::Input(msg.into())
}

/// Refuses settings the method does not use (they would be silently ignored).
fn check_unused_settings(params: &MergeParams) -> Result<()> {
    let method = params.method;
    if params.weights.is_some() && !method.takes_weights() {
        return Err(input_err(format!(
            "weights apply to methods linear, task-arithmetic and ties; {method} is controlled by t"
        )));
    }
    if params.density != 1.0 && !method.takes_density() {
        return Err(input_err(format!(
            "density applies to method ties only (it sparsifies the task vectors); remove it for {method}"
        )));
    }
    if params.lambda != 1.0 && !method.takes_lambda() {
        return Err(input_err(format!(
            "lambda applies to methods task-arithmetic and ties only; remove it for {method}"
        )));
    }
    if params.normalize.is_some() && method.default_normalize().is_none() {
        return Err(input_err(format!(
            "normalize applies to methods linear, task-arithmetic and ties; {method} has no such setting"
        )));
    }
    Ok(())
}

/// One finite weight per model, or 1 each when not given.
fn resolve_weights(params: &MergeParams, models: usize, what: &str) -> Result<Vec<f64>> {
    match &params.weights {
        Some(w) => {
            if w.len() != models {
                return Err(input_err(format!(
                    "weights has {} values for {models} models (one per model, {what})",
                    w.len()
                )));
            }
            if let Some(v) = w.iter().find(|v| !v.is_finite()) {
                return Err(input_err(format!("weights must be finite, got {v}")));
            }
            Ok(w.clone())
        }
        None => Ok(vec![1.0; models]),
    }
}

/// `inputs` counts every input in merge order, the base included.
fn choose_mix(params: &MergeParams, inputs: usize) -> Result<Mix> {
    check_unused_settings(params)?;
    let method = params.method;
    match method {
        MergeMethod::Slerp => {
            if inputs != 2 {
                return Err(input_err(format!(
                    "slerp merges exactly 2 models, got {inputs} (a base that is not among the \
                     models counts as one more input); use method linear for more"
                )));
            }
            params.t.validate().map_err(input_err)?;
            Ok(Mix::Slerp)
        }
        MergeMethod::Linear => {
            if inputs < 2 {
                return Err(input_err(format!(
                    "linear merges 2 or more models, got {inputs}"
                )));
            }
            let normalize = params.normalize.unwrap_or(true);
            match &params.weights {
                Some(_) => {
                    let weights = resolve_weights(params, inputs, "base first")?;
                    if normalize && weights.iter().sum::<f64>() as f32 == 0.0 {
                        return Err(input_err(
                            "weights sum to 0 and cannot be normalised; change them or set normalize: false",
                        ));
                    }
                    Ok(Mix::Weighted { weights, normalize })
                }
                None if params.normalize.is_some() => Err(input_err(
                    "normalize applies to linear with weights; without weights two models are \
                     interpolated by t and more are averaged",
                )),
                None if inputs == 2 => {
                    params.t.validate().map_err(input_err)?;
                    Ok(Mix::Lerp)
                }
                None => Ok(Mix::Weighted {
                    weights: vec![1.0; inputs],
                    normalize: true,
                }),
            }
        }
        MergeMethod::Nuslerp => {
            let models = inputs.saturating_sub(1);
            if models != 2 {
                return Err(input_err(format!(
                    "nuslerp merges exactly 2 models besides the base, got {models}"
                )));
            }
            params.t.validate().map_err(input_err)?;
            Ok(Mix::Nuslerp)
        }
        MergeMethod::TaskArithmetic | MergeMethod::Ties => {
            let models = inputs.saturating_sub(1);
            if models == 0 {
                return Err(input_err(format!(
                    "{method} needs at least 1 fine-tuned model besides the base"
                )));
            }
            let weights = resolve_weights(params, models, "the base has none")?;
            if !params.lambda.is_finite() {
                return Err(input_err(format!(
                    "lambda must be finite, got {}",
                    params.lambda
                )));
            }
            let normalize = params
                .normalize
                .or(method.default_normalize())
                .unwrap_or(false);
            let ties = if method == MergeMethod::Ties {
                if !(params.density > 0.0 && params.density <= 1.0) {
                    return Err(input_err(format!(
                        "density must be greater than 0 and at most 1, got {}",
                        params.density
                    )));
                }
                Some(Ties {
                    density: params.density,
                })
            } else {
                // mergekit counts |Σ wᵢ| < 1e-8 as 1: refuse instead of silently not dividing.
                if normalize && weights.iter().sum::<f64>().abs() < 1e-8 {
                    return Err(input_err(
                        "weights sum to 0 and cannot be normalised; change them or set normalize: false",
                    ));
                }
                None
            };
            Ok(Mix::TaskVectors(TaskArithmetic {
                weights,
                lambda: params.lambda,
                normalize,
                ties,
            }))
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

/// The inputs of a task-vector method: the base (required, and not one of `models`), then the
/// fine-tuned models in order.
fn task_vector_order(
    method: MergeMethod,
    models: &[PathBuf],
    base: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let base = base.ok_or_else(|| {
        input_err(format!(
            "{method} merges task vectors (each model minus the base): give the base model, \
             the model the fine-tunes started from (in a job, the pruned model; on the command \
             line, --base)"
        ))
    })?;
    if models.is_empty() {
        return Err(input_err("no models to merge"));
    }
    if let Some(m) = models.iter().find(|m| same_path(m, base)) {
        return Err(input_err(format!(
            "the base model {} is also among the models to merge; {method} takes each model's \
             difference to the base, so list only the fine-tuned models",
            m.display()
        )));
    }
    let mut order = vec![base.to_path_buf()];
    order.extend(models.iter().cloned());
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

/// One merged tensor and what the report records about it.
struct MergedTensor {
    values: Vec<f32>,
    /// slerp, nuslerp: cosine of the two tensors or task vectors.
    cosine: Option<f64>,
    /// slerp, nuslerp: fell back to linear interpolation.
    lerp_fallback: bool,
    task_vector_norms: Option<Vec<f64>>,
    kept_per_model: Option<usize>,
    sign_conflicts: Option<usize>,
}

impl MergedTensor {
    fn plain(values: Vec<f32>) -> Self {
        Self {
            values,
            cosine: None,
            lerp_fallback: false,
            task_vector_norms: None,
            kept_per_model: None,
            sign_conflicts: None,
        }
    }
}

/// L2 norm of `x - base`.
fn task_vector_norm(base: &[f32], x: &[f32]) -> f64 {
    x.iter()
        .zip(base)
        .map(|(&a, &b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Merges one tensor of `inputs` (in merge order, the base first).
fn merge_tensor(plan: &TensorPlan, inputs: &[ModelInput], mix: &Mix) -> Result<MergedTensor> {
    let values: Vec<Vec<f32>> = inputs
        .iter()
        .map(|m| load_finite(m, &plan.name))
        .collect::<Result<_>>()?;
    let t = plan.t.unwrap_or_default();
    Ok(match mix {
        Mix::Slerp => {
            let (out, b) = slerp::slerp(t, &values[0], &values[1]);
            MergedTensor {
                cosine: Some(b.dot),
                lerp_fallback: b.lerp_fallback,
                ..MergedTensor::plain(out)
            }
        }
        Mix::Lerp => {
            let b = slerp::lerp_blend(t, f64::NAN);
            MergedTensor::plain(slerp::apply(&b, &values[0], &values[1]))
        }
        Mix::Weighted { weights, normalize } => {
            let refs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            MergedTensor::plain(linear::weighted_sum(weights, &refs, *normalize))
        }
        Mix::Nuslerp => {
            let (base, x0, x1) = (&values[0], &values[1], &values[2]);
            let (out, b) = nuslerp::merge(t, base, x0, x1);
            MergedTensor {
                cosine: Some(b.dot),
                lerp_fallback: b.lerp_fallback,
                task_vector_norms: Some(vec![
                    task_vector_norm(base, x0),
                    task_vector_norm(base, x1),
                ]),
                ..MergedTensor::plain(out)
            }
        }
        Mix::TaskVectors(settings) => {
            let models: Vec<&[f32]> = values[1..].iter().map(Vec::as_slice).collect();
            let merged = task_arithmetic::merge(settings, &values[0], &models)
                .map_err(|e| input_err(format!("tensor `{}`: {e}", plan.name)))?;
            MergedTensor {
                task_vector_norms: Some(merged.task_vector_norms),
                kept_per_model: merged.kept_per_model,
                sign_conflicts: merged.sign_conflicts,
                ..MergedTensor::plain(merged.values)
            }
        }
    })
}

/// TIES: refuses, before anything is read, a density that keeps no entry of some tensor.
fn check_density(plans: &[TensorPlan], mix: &Mix) -> Result<()> {
    let Mix::TaskVectors(TaskArithmetic {
        ties: Some(ties), ..
    }) = mix
    else {
        return Ok(());
    };
    for plan in plans {
        let elements = plan.shape.iter().product::<usize>();
        sparsify::kept_count(ties.density, elements)
            .map_err(|e| input_err(format!("tensor `{}`: {e}", plan.name)))?;
    }
    Ok(())
}

/// Merges `models` (HF directories or `.gguf` files) into an HF directory at `out_dir`.
/// `base` is the source of config and tokenizer: for slerp and linear the `t = 0` model
/// (default: the first); for nuslerp, task-arithmetic and ties the model the task vectors are
/// taken against (required, not among `models`).
pub fn run(
    models: &[PathBuf],
    base: Option<&Path>,
    params: &MergeParams,
    out_dir: &Path,
) -> Result<MergeSummary> {
    let order = if params.method.uses_task_vectors() {
        task_vector_order(params.method, models, base)?
    } else {
        merge_order(models, base)?
    };
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
    check_density(&plans, &mix)?;
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
            let merged = merge_tensor(plan, &inputs, &mix)?;
            let mut raw = encode_f32(&merged.values, plan.dtype);
            raw.shape = plan.shape.clone();
            encoded.push((plan.name.clone(), raw));
            tracing::debug!(
                tensor = %plan.name,
                t = ?plan.t,
                cosine = ?merged.cosine,
                lerp_fallback = merged.lerp_fallback,
                sign_conflicts = ?merged.sign_conflicts,
                "merged"
            );
            tensor_records.push(TensorRecord {
                name: plan.name.clone(),
                shape: plan.shape.clone(),
                dtype: plan.dtype.torch_name().into(),
                t: plan.t,
                cosine: merged.cosine,
                lerp_fallback: merged.lerp_fallback,
                task_vector_norms: merged.task_vector_norms,
                kept_per_model: merged.kept_per_model,
                sign_conflicts: merged.sign_conflicts,
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
    let weights = mix.weights();
    let ties = matches!(&mix, Mix::TaskVectors(TaskArithmetic { ties: Some(_), .. }));
    let total_sign_conflicts = ties.then(|| {
        tensor_records
            .iter()
            .filter_map(|r| r.sign_conflicts)
            .sum::<usize>()
    });
    let report = MergeReport {
        method: params.method,
        params: params.clone(),
        inputs: records,
        t_resolved: t_resolved.clone(),
        weights: weights.clone(),
        normalize: mix.normalize(),
        total_tensors: tensor_records.len(),
        fallback_count: fallback_tensors.len(),
        fallback_tensors,
        total_sign_conflicts,
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
        sign_conflicts: total_sign_conflicts,
    })
}

/// The stage contract's `merge`: inputs `base` (the pruned model) and `model-0`, `model-1`, …
/// in order. slerp and linear mix the models (`model-0` is mergekit's `t = 0` end); nuslerp,
/// task-arithmetic and ties take the task vectors against `base`.
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
    let base = if p.method.uses_task_vectors() {
        Some(ctx.model("base")?)
    } else {
        None
    };
    let params = MergeParams {
        method: p.method,
        t,
        weights: (!p.weights.is_empty()).then(|| p.weights.clone()),
        normalize: p.normalize,
        density: p.density,
        lambda: p.lambda,
    };
    let s = run(&models, base.as_deref(), &params, ctx.out)?;
    Ok(Outcome::new(
        StageSummary::Merge(contract::MergeSummary {
            tensors: s.tensors as u64,
            fallback_count: s.fallback_count as u64,
        }),
        &["config.json", "merge.json"],
    ))
}
