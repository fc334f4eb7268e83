//! The dose of a LoRA run: how much data it trained on and how far its adapters move the
//! weights.
//!
//! An adapter on module `W [out, in]` changes it by `ΔW = s · B A` with `A [r, in]`,
//! `B [out, r]` (PEFT layout) and `s = alpha / r` (`alpha / sqrt(r)` with rsLoRA). `ΔW` is never
//! formed: with `G_A = A Aᵀ` and `G_B = Bᵀ B` (both `r × r`),
//!
//! - `‖B A‖²_F = trace(G_B G_A)`;
//! - `⟨B₁A₁, B₂A₂⟩_F = trace((B₂ᵀB₁)(A₁A₂ᵀ))`, which gives the cosine between two runs' `ΔW`
//!   (the ranks may differ).
//!
//! Relative changes are aggregated as `sqrt(Σ‖ΔW‖²) / sqrt(Σ‖W‖²)` over the modules of a
//! projection kind (`q_proj`, …), of a layer, or of the whole model.

use super::batching::{DataOrder, Example};
use super::error::{Result, TrainError};
use super::lora::{LoraParams, LoraSet, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::model::llama::PROJECTIONS;
use crate::model::safetensors_io::decode_f32;
use crate::model::Llama;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// `(layer, module)`, e.g. `(3, "q_proj")`.
pub type ModuleKey = (usize, String);

/// The low-rank factors of one adapted module: `ΔW = scale · B A`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleFactors {
    pub layer: usize,
    pub module: String,
    pub rank: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    /// `A`, `[rank, in_dim]`, row-major.
    pub a: Vec<f32>,
    /// `B`, `[out_dim, rank]`, row-major.
    pub b: Vec<f32>,
    pub scale: f64,
}

impl ModuleFactors {
    /// Checks the shapes: `a_shape = [r, in]`, `b_shape = [out, r]`, values to match.
    pub fn new(
        layer: usize,
        module: &str,
        (a_shape, a): (&[usize], Vec<f32>),
        (b_shape, b): (&[usize], Vec<f32>),
        scale: f64,
    ) -> Result<Self> {
        let (&[rank, in_dim], &[out_dim, b_rank]) = (a_shape, b_shape) else {
            return Err(TrainError::Input(format!(
                "layer {layer} {module}: LoRA factors must be matrices, got A {a_shape:?} and \
                 B {b_shape:?}"
            )));
        };
        if rank == 0 || rank != b_rank || a.len() != rank * in_dim || b.len() != out_dim * rank {
            return Err(TrainError::Input(format!(
                "layer {layer} {module}: A {a_shape:?} ({} values) and B {b_shape:?} ({} values) \
                 are not the factors of one rank-r update",
                a.len(),
                b.len()
            )));
        }
        Ok(Self {
            layer,
            module: module.to_string(),
            rank,
            in_dim,
            out_dim,
            a,
            b,
            scale,
        })
    }

    pub fn key(&self) -> ModuleKey {
        (self.layer, self.module.clone())
    }

    /// `A₁ A₂ᵀ`, `[r₁, r₂]` row-major (`self` = 1).
    fn a_cross(&self, other: &Self) -> Vec<f64> {
        let (r1, r2, n) = (self.rank, other.rank, self.in_dim);
        let mut out = vec![0.0; r1 * r2];
        for i in 0..r1 {
            let row1 = &self.a[i * n..(i + 1) * n];
            for j in 0..r2 {
                let row2 = &other.a[j * n..(j + 1) * n];
                out[i * r2 + j] = row1
                    .iter()
                    .zip(row2)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum();
            }
        }
        out
    }

    /// `B₂ᵀ B₁`, `[r₂, r₁]` row-major (`self` = 1).
    fn b_cross(&self, other: &Self) -> Vec<f64> {
        let (r1, r2) = (self.rank, other.rank);
        let mut out = vec![0.0; r2 * r1];
        for (row1, row2) in self.b.chunks_exact(r1).zip(other.b.chunks_exact(r2)) {
            for (p, &y) in row2.iter().enumerate() {
                for (q, &x) in row1.iter().enumerate() {
                    out[p * r1 + q] += f64::from(y) * f64::from(x);
                }
            }
        }
        out
    }

    /// `⟨ΔW₁, ΔW₂⟩_F` without forming either (`self` = 1); the modules must have one shape.
    pub fn delta_inner(&self, other: &Self) -> Result<f64> {
        if (self.out_dim, self.in_dim) != (other.out_dim, other.in_dim) {
            return Err(TrainError::Input(format!(
                "layer {} {}: ΔW is [{}, {}] in one adapter and [{}, {}] in the other",
                self.layer, self.module, self.out_dim, self.in_dim, other.out_dim, other.in_dim
            )));
        }
        let (r1, r2) = (self.rank, other.rank);
        let bb = self.b_cross(other); // [r2, r1]
        let aa = self.a_cross(other); // [r1, r2]
        let mut trace = 0.0;
        for p in 0..r2 {
            for q in 0..r1 {
                trace += bb[p * r1 + q] * aa[q * r2 + p];
            }
        }
        Ok(self.scale * other.scale * trace)
    }

    /// `‖ΔW‖²_F`.
    pub fn delta_norm_sq(&self) -> f64 {
        // Same shapes by construction: the error branch cannot be taken.
        self.delta_inner(self).map_or(0.0, |x| x.max(0.0))
    }
}

/// All adapted modules of one LoRA run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdapterDelta {
    pub modules: Vec<ModuleFactors>,
}

fn checkpoint_err(origin: &str, reason: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: origin.to_string(),
        reason: reason.into(),
    }
}

/// Values of a safetensors tensor as f32.
fn tensor_f32(origin: &str, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    decode_f32(dtype, bytes).ok_or_else(|| {
        checkpoint_err(
            origin,
            format!("tensor `{name}` has dtype {dtype:?}; expected F32, F16, BF16 or F64"),
        )
    })
}

/// `(layer, module, is_a)` of a PEFT tensor name
/// `….layers.<L>.<group>.<module>.lora_{A,B}.weight`; `None` for other tensors.
fn parse_peft_name(name: &str) -> Option<(usize, String, bool)> {
    let (prefix, is_a) = if let Some(p) = name.strip_suffix(".lora_A.weight") {
        (p, true)
    } else {
        (name.strip_suffix(".lora_B.weight")?, false)
    };
    let parts: Vec<&str> = prefix.split('.').collect();
    let at = parts.iter().rposition(|p| *p == "layers")?;
    let layer = parts.get(at + 1)?.parse().ok()?;
    let module = parts.last()?.to_string();
    Some((layer, module, is_a))
}

/// The scale `s` of `ΔW = s · B A` from a PEFT `adapter_config.json`.
fn peft_scale(origin: &str, config: &Value) -> Result<(usize, f64)> {
    let rank = config
        .get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| checkpoint_err(origin, "adapter config has no integer `r`"))?;
    let alpha = config
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| checkpoint_err(origin, "adapter config has no `lora_alpha`"))?;
    if config.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(checkpoint_err(
            origin,
            "adapter config sets `use_dora`; a DoRA update is not s·B·A, so its dose is not measured",
        ));
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if config
            .get(pattern)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(checkpoint_err(
                origin,
                format!(
                    "adapter config sets `{pattern}`; per-module ranks or alphas are not supported"
                ),
            ));
        }
    }
    let params = LoraParams {
        rank: usize::try_from(rank).map_err(|_| checkpoint_err(origin, "`r` is too large"))?,
        alpha,
        rslora: config
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..LoraParams::default()
    };
    if params.rank == 0 {
        return Err(checkpoint_err(origin, "adapter config has `r` = 0"));
    }
    Ok((params.rank, params.scale()))
}

impl AdapterDelta {
    /// The current adapters of a training run.
    pub fn from_lora_set(set: &LoraSet) -> Result<Self> {
        let scale = set.params.scale();
        let mut modules = Vec::with_capacity(set.adapters.len());
        for ad in &set.adapters {
            let a = ad.a.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let b = ad.b.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            modules.push(ModuleFactors::new(
                ad.layer,
                ad.module,
                (ad.a.dims(), a),
                (ad.b.dims(), b),
                scale,
            )?);
        }
        Ok(Self { modules })
    }

    /// A PEFT adapter from the text of its `adapter_config.json` and the bytes of its
    /// `adapter_model.safetensors`; `origin` names them in errors.
    pub fn from_peft(config_text: &str, weights: &[u8], origin: &str) -> Result<Self> {
        let config: Value = serde_json::from_str(config_text).map_err(|e| {
            checkpoint_err(origin, format!("{ADAPTER_CONFIG} is not valid JSON: {e}"))
        })?;
        let (rank, scale) = peft_scale(origin, &config)?;
        let st = SafeTensors::deserialize(weights)
            .map_err(|e| checkpoint_err(origin, format!("{ADAPTER_WEIGHTS}: {e}")))?;
        type Factor = (Vec<usize>, Vec<f32>);
        let mut pairs: BTreeMap<ModuleKey, (Option<Factor>, Option<Factor>)> = BTreeMap::new();
        for (name, view) in st.iter() {
            let Some((layer, module, is_a)) = parse_peft_name(name) else {
                tracing::debug!(tensor = name, origin, "not a LoRA factor; ignored");
                continue;
            };
            let values = tensor_f32(origin, name, view.dtype(), view.data())?;
            let factor = Some((view.shape().to_vec(), values));
            let slot = pairs.entry((layer, module)).or_default();
            if is_a {
                slot.0 = factor;
            } else {
                slot.1 = factor;
            }
        }
        let mut modules = Vec::with_capacity(pairs.len());
        for ((layer, module), pair) in pairs {
            let (Some((a_shape, a)), Some((b_shape, b))) = pair else {
                return Err(checkpoint_err(
                    origin,
                    format!("layer {layer} {module} has only one of lora_A and lora_B"),
                ));
            };
            if a_shape.first() != Some(&rank) {
                return Err(checkpoint_err(
                    origin,
                    format!("layer {layer} {module}: lora_A is {a_shape:?}, but r = {rank}"),
                ));
            }
            modules.push(ModuleFactors::new(
                layer,
                &module,
                (&a_shape, a),
                (&b_shape, b),
                scale,
            )?);
        }
        if modules.is_empty() {
            return Err(checkpoint_err(origin, "no lora_A / lora_B tensors"));
        }
        Ok(Self { modules })
    }

    /// A PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    pub fn from_peft_dir(dir: &Path) -> Result<Self> {
        let cfg = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg).map_err(|e| TrainError::io(&cfg, e))?;
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        let weights = std::fs::read(&weights_path).map_err(|e| TrainError::io(&weights_path, e))?;
        Self::from_peft(&text, &weights, &dir.display().to_string())
    }
}

/// `‖W‖²_F` of the base weight of every module of `delta` in `model` (before merging).
pub fn base_norms_sq(model: &Llama, delta: &AdapterDelta) -> Result<BTreeMap<ModuleKey, f64>> {
    let mut out = BTreeMap::new();
    for m in &delta.modules {
        let layer = model.layers.get(m.layer).ok_or_else(|| {
            TrainError::Input(format!(
                "the adapter has layer {}, the model {} layers",
                m.layer,
                model.layers.len()
            ))
        })?;
        let lin = Llama::projection(layer, &m.module)?;
        let part = lin
            .part_index(&m.module)
            .ok_or_else(|| TrainError::Input(format!("layer {} has no `{}`", m.layer, m.module)))?;
        let w = lin.part_weight(part)?;
        if w.dims() != [m.out_dim, m.in_dim] {
            return Err(TrainError::Input(format!(
                "layer {} {}: the weight is {:?}, the adapter's ΔW [{}, {}]",
                m.layer,
                m.module,
                w.dims(),
                m.out_dim,
                m.in_dim
            )));
        }
        let norm_sq = w
            .to_dtype(candle_core::DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()?;
        out.insert(m.key(), f64::from(norm_sq));
    }
    Ok(out)
}

/// `‖ΔW‖ / ‖W‖` over a group of modules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelativeChange {
    /// `sqrt(Σ ‖ΔW‖²_F)`.
    pub delta_norm: f64,
    /// `sqrt(Σ ‖W‖²_F)`.
    pub base_norm: f64,
    /// `delta_norm / base_norm` (0 when the base norm is 0).
    pub ratio: f64,
    /// Adapted modules in the group.
    pub modules: usize,
}

#[derive(Default)]
struct SumSq {
    delta: f64,
    base: f64,
    modules: usize,
}

impl SumSq {
    fn add(&mut self, delta_sq: f64, base_sq: f64) {
        self.delta += delta_sq;
        self.base += base_sq;
        self.modules += 1;
    }

    fn change(&self) -> RelativeChange {
        let (delta_norm, base_norm) = (self.delta.sqrt(), self.base.sqrt());
        RelativeChange {
            delta_norm,
            base_norm,
            ratio: if base_norm > 0.0 {
                delta_norm / base_norm
            } else {
                0.0
            },
            modules: self.modules,
        }
    }
}

/// How far the adapters move the weights: whole model, per projection kind, per layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WeightChange {
    pub overall: RelativeChange,
    /// By projection kind (`q_proj`, …), summed over layers.
    pub per_projection: BTreeMap<String, RelativeChange>,
    /// By layer index, summed over the adapted projections.
    pub per_layer: BTreeMap<usize, RelativeChange>,
}

/// [`WeightChange`] of `delta` against the base norms of [`base_norms_sq`].
pub fn weight_change(
    delta: &AdapterDelta,
    base_norms_sq: &BTreeMap<ModuleKey, f64>,
) -> Result<WeightChange> {
    let mut overall = SumSq::default();
    let mut per_projection: BTreeMap<String, SumSq> = BTreeMap::new();
    let mut per_layer: BTreeMap<usize, SumSq> = BTreeMap::new();
    for m in &delta.modules {
        let base_sq = *base_norms_sq.get(&m.key()).ok_or_else(|| {
            TrainError::Input(format!(
                "no base weight norm for layer {} {}",
                m.layer, m.module
            ))
        })?;
        let delta_sq = m.delta_norm_sq();
        overall.add(delta_sq, base_sq);
        per_projection
            .entry(m.module.clone())
            .or_default()
            .add(delta_sq, base_sq);
        per_layer.entry(m.layer).or_default().add(delta_sq, base_sq);
    }
    Ok(WeightChange {
        overall: overall.change(),
        per_projection: per_projection
            .into_iter()
            .map(|(k, s)| (k, s.change()))
            .collect(),
        per_layer: per_layer
            .into_iter()
            .map(|(k, s)| (k, s.change()))
            .collect(),
    })
}

/// The cosine between two runs' `ΔW`, over the whole model and per projection kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeltaCosine {
    /// `Σ⟨ΔW₁, ΔW₂⟩ / (‖ΔW₁‖ ‖ΔW₂‖)` over all modules (a module adapted in one run only adds to
    /// that run's norm); `None` when either `ΔW` is zero.
    pub overall: Option<f64>,
    /// The same per projection kind.
    pub per_projection: BTreeMap<String, Option<f64>>,
    /// Modules adapted in both runs.
    pub shared_modules: usize,
    /// Modules adapted in one run only.
    pub unshared_modules: usize,
}

#[derive(Default)]
struct CosineSums {
    inner: f64,
    first_sq: f64,
    second_sq: f64,
}

impl CosineSums {
    fn cosine(&self) -> Option<f64> {
        let denom = (self.first_sq * self.second_sq).sqrt();
        (denom > 0.0).then(|| (self.inner / denom).clamp(-1.0, 1.0))
    }
}

/// The cosine between the `ΔW` of two adapters of the same model.
pub fn delta_cosine(first: &AdapterDelta, second: &AdapterDelta) -> Result<DeltaCosine> {
    let second_by_key: BTreeMap<ModuleKey, &ModuleFactors> =
        second.modules.iter().map(|m| (m.key(), m)).collect();
    let mut overall = CosineSums::default();
    let mut per_projection: BTreeMap<String, CosineSums> = BTreeMap::new();
    let mut shared = 0usize;
    for m in &first.modules {
        let sq = m.delta_norm_sq();
        let inner = match second_by_key.get(&m.key()) {
            Some(other) => {
                shared += 1;
                m.delta_inner(other)?
            }
            None => 0.0,
        };
        for sums in [
            &mut overall,
            per_projection.entry(m.module.clone()).or_default(),
        ] {
            sums.inner += inner;
            sums.first_sq += sq;
        }
    }
    for m in &second.modules {
        let sq = m.delta_norm_sq();
        for sums in [
            &mut overall,
            per_projection.entry(m.module.clone()).or_default(),
        ] {
            sums.second_sq += sq;
        }
    }
    Ok(DeltaCosine {
        overall: overall.cosine(),
        per_projection: per_projection
            .into_iter()
            .map(|(k, s)| (k, s.cosine()))
            .collect(),
        shared_modules: shared,
        unshared_modules: first.modules.len() + second.modules.len() - 2 * shared,
    })
}

/// Sequences and tokens a run fed through the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequencesSeen {
    pub sequences: u64,
    /// Prompt and answer tokens fed (no padding; the last token of a sequence is only a target).
    pub input_tokens: u64,
    /// Tokens that carry loss.
    pub answer_tokens: u64,
}

/// Replays `batch_draws` batches of a fresh `order` (the order is a pure function of its seed,
/// so this counts every session of a resumed run) over `examples`.
pub fn sequences_seen(
    mut order: DataOrder,
    examples: &[Example],
    batch_draws: u64,
) -> SequencesSeen {
    let mut seen = SequencesSeen::default();
    for _ in 0..batch_draws {
        for i in order.next_batch() {
            let Some(e) = examples.get(i) else { continue };
            seen.sequences += 1;
            seen.input_tokens += e.tokens.len().saturating_sub(1) as u64;
            seen.answer_tokens += e.targets() as u64;
        }
    }
    seen
}

/// The training dose of a fine-tuning run (`finetune.json`'s `dose`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingDose {
    pub optimizer_steps: u64,
    /// Sequences trained on (a record seen in two epochs counts twice).
    pub sequences: u64,
    /// Records trained on (after hold-out, `limit` and skipped records).
    pub training_records: usize,
    /// `sequences / training_records`.
    pub epochs: f64,
    /// Tokens that carry loss.
    pub answer_tokens: u64,
    /// Prompt and answer tokens fed to the model (no padding).
    pub input_tokens: u64,
    /// `‖ΔW‖ / ‖W‖` of the adapters; `None` when not measured.
    pub weight_change: Option<WeightChange>,
}

impl TrainingDose {
    pub fn new(
        optimizer_steps: u64,
        seen: SequencesSeen,
        training_records: usize,
        weight_change: Option<WeightChange>,
    ) -> Self {
        Self {
            optimizer_steps,
            sequences: seen.sequences,
            training_records,
            epochs: if training_records > 0 {
                seen.sequences as f64 / training_records as f64
            } else {
                0.0
            },
            answer_tokens: seen.answer_tokens,
            input_tokens: seen.input_tokens,
            weight_change,
        }
    }
}

/// Projection kinds in the model's order, then any others in name order.
pub fn projection_order<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().cloned().collect();
    names.sort_by_key(|n| {
        (
            PROJECTIONS
                .iter()
                .position(|p| p == n)
                .unwrap_or(PROJECTIONS.len()),
            n.clone(),
        )
    });
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::SplitMix64;

    fn random(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (2.0 * rng.next_f64() - 1.0) as f32)
            .collect()
    }

    fn factors(
        rng: &mut SplitMix64,
        layer: usize,
        module: &str,
        (out_dim, in_dim, rank): (usize, usize, usize),
        scale: f64,
    ) -> ModuleFactors {
        let a = random(rng, rank * in_dim);
        let b = random(rng, out_dim * rank);
        ModuleFactors::new(
            layer,
            module,
            (&[rank, in_dim], a),
            (&[out_dim, rank], b),
            scale,
        )
        .expect("shapes")
    }

    /// `scale · B A` as a dense `[out, in]` matrix.
    fn dense(m: &ModuleFactors) -> Vec<f64> {
        let mut w = vec![0.0; m.out_dim * m.in_dim];
        for o in 0..m.out_dim {
            for i in 0..m.in_dim {
                let mut x = 0.0;
                for k in 0..m.rank {
                    x += f64::from(m.b[o * m.rank + k]) * f64::from(m.a[k * m.in_dim + i]);
                }
                w[o * m.in_dim + i] = m.scale * x;
            }
        }
        w
    }

    fn dot(x: &[f64], y: &[f64]) -> f64 {
        x.iter().zip(y).map(|(a, b)| a * b).sum()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn low_rank_norms_and_inner_products_match_dense_matrices() {
        let mut rng = SplitMix64::new(7);
        let x = factors(&mut rng, 0, "q_proj", (6, 5, 3), 2.0);
        let y = factors(&mut rng, 0, "q_proj", (6, 5, 4), 0.5);
        let (dx, dy) = (dense(&x), dense(&y));
        assert!(close(x.delta_norm_sq(), dot(&dx, &dx)));
        assert!(close(y.delta_norm_sq(), dot(&dy, &dy)));
        assert!(close(x.delta_inner(&y).expect("inner"), dot(&dx, &dy)));
        assert!(close(y.delta_inner(&x).expect("inner"), dot(&dx, &dy)));
        let other_shape = factors(&mut rng, 0, "q_proj", (5, 6, 3), 1.0);
        assert!(x.delta_inner(&other_shape).is_err());
        assert!(ModuleFactors::new(
            0,
            "q_proj",
            (&[3, 5], vec![0.0; 15]),
            (&[6, 2], vec![0.0; 12]),
            1.0
        )
        .is_err());
    }

    #[test]
    fn weight_change_aggregates_squared_norms_per_projection_layer_and_model() {
        let mut rng = SplitMix64::new(11);
        let mut delta = AdapterDelta::default();
        let mut base = BTreeMap::new();
        let mut dense_sq: BTreeMap<ModuleKey, f64> = BTreeMap::new();
        for layer in 0..3 {
            for (module, shape) in [("q_proj", (6, 5, 2)), ("down_proj", (5, 7, 2))] {
                let m = factors(&mut rng, layer, module, shape, 1.5);
                let d = dense(&m);
                dense_sq.insert(m.key(), dot(&d, &d));
                let w = random(&mut rng, shape.0 * shape.1);
                base.insert(
                    m.key(),
                    w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>(),
                );
                delta.modules.push(m);
            }
        }
        let change = weight_change(&delta, &base).expect("change");
        let ratio = |filter: &dyn Fn(&ModuleKey) -> bool| {
            let d: f64 = dense_sq
                .iter()
                .filter(|(k, _)| filter(k))
                .map(|(_, v)| v)
                .sum();
            let b: f64 = base.iter().filter(|(k, _)| filter(k)).map(|(_, v)| v).sum();
            d.sqrt() / b.sqrt()
        };
        assert!(close(change.overall.ratio, ratio(&|_| true)));
        assert_eq!(change.overall.modules, 6);
        let q = &change.per_projection["q_proj"];
        assert!(close(q.ratio, ratio(&|k| k.1 == "q_proj")));
        assert_eq!(q.modules, 3);
        assert!(close(
            change.per_projection["down_proj"].ratio,
            ratio(&|k| k.1 == "down_proj")
        ));
        assert!(close(change.per_layer[&1].ratio, ratio(&|k| k.0 == 1)));
        assert_eq!(change.per_layer.len(), 3);
        base.remove(&(2, "q_proj".to_string()));
        assert!(weight_change(&delta, &base).is_err());
    }

    #[test]
    fn cosine_matches_dense_and_counts_unshared_modules() {
        let mut rng = SplitMix64::new(13);
        let first = AdapterDelta {
            modules: vec![
                factors(&mut rng, 0, "q_proj", (6, 5, 3), 2.0),
                factors(&mut rng, 1, "q_proj", (6, 5, 3), 2.0),
                factors(&mut rng, 0, "up_proj", (8, 5, 3), 2.0),
            ],
        };
        let second = AdapterDelta {
            modules: vec![
                factors(&mut rng, 0, "q_proj", (6, 5, 2), 4.0),
                factors(&mut rng, 1, "q_proj", (6, 5, 2), 4.0),
            ],
        };
        let (mut inner, mut n1, mut n2) = (0.0, 0.0, 0.0);
        let (mut q_inner, mut q1) = (0.0, 0.0);
        for m in &first.modules {
            let d = dense(m);
            n1 += dot(&d, &d);
            if m.module == "q_proj" {
                q1 += dot(&d, &d);
            }
            if let Some(o) = second.modules.iter().find(|o| o.key() == m.key()) {
                inner += dot(&d, &dense(o));
                q_inner += dot(&d, &dense(o));
            }
        }
        for m in &second.modules {
            let d = dense(m);
            n2 += dot(&d, &d);
        }
        let c = delta_cosine(&first, &second).expect("cosine");
        assert!(close(c.overall.expect("cos"), inner / (n1 * n2).sqrt()));
        assert!(close(
            c.per_projection["q_proj"].expect("q"),
            q_inner / (q1 * n2).sqrt()
        ));
        // up_proj is adapted in the first run only: no direction to compare with.
        assert_eq!(c.per_projection["up_proj"], None);
        assert_eq!((c.shared_modules, c.unshared_modules), (2, 1));
        // With itself: 1; with B negated: -1; against a zero update: undefined.
        let same = delta_cosine(&first, &first).expect("cosine");
        assert!(close(same.overall.expect("cos"), 1.0));
        let mut negated = first.clone();
        negated
            .modules
            .iter_mut()
            .for_each(|m| m.b.iter_mut().for_each(|v| *v = -*v));
        assert!(close(
            delta_cosine(&first, &negated)
                .expect("c")
                .overall
                .expect("cos"),
            -1.0
        ));
        let mut zero = first.clone();
        zero.modules
            .iter_mut()
            .for_each(|m| m.b.iter_mut().for_each(|v| *v = 0.0));
        assert_eq!(delta_cosine(&first, &zero).expect("c").overall, None);
    }

    #[test]
    fn peft_files_round_trip_with_their_scale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut rng = SplitMix64::new(17);
        let (rank, alpha) = (4usize, 8.0);
        let mut expected = Vec::new();
        let mut tensors = Vec::new();
        for (layer, module, group, out_dim, in_dim) in [
            (0, "k_proj", "self_attn", 3, 5),
            (1, "gate_proj", "mlp", 7, 5),
        ] {
            let m = factors(
                &mut rng,
                layer,
                module,
                (out_dim, in_dim, rank),
                alpha / rank as f64,
            );
            let p = format!("base_model.model.model.layers.{layer}.{group}.{module}");
            tensors.push((
                format!("{p}.lora_A.weight"),
                vec![rank, in_dim],
                m.a.clone(),
            ));
            tensors.push((
                format!("{p}.lora_B.weight"),
                vec![out_dim, rank],
                m.b.clone(),
            ));
            expected.push(m);
        }
        crate::train::tensor_io::write(&tmp.path().join(ADAPTER_WEIGHTS), &tensors).expect("write");
        let config = serde_json::json!({"r": rank, "lora_alpha": alpha, "use_rslora": false,
            "rank_pattern": {}, "alpha_pattern": {}});
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), config.to_string()).expect("config");
        let back = AdapterDelta::from_peft_dir(tmp.path()).expect("read");
        assert_eq!(back.modules, expected);
        // rsLoRA: alpha / sqrt(r).
        let rs = serde_json::json!({"r": rank, "lora_alpha": alpha, "use_rslora": true});
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), rs.to_string()).expect("config");
        let back = AdapterDelta::from_peft_dir(tmp.path()).expect("read");
        assert!(close(back.modules[0].scale, alpha / 2.0));
        // A rank that disagrees with the tensors, and a lone factor, are refused.
        let bad = serde_json::json!({"r": 8, "lora_alpha": alpha});
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), bad.to_string()).expect("config");
        assert!(AdapterDelta::from_peft_dir(tmp.path()).is_err());
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), config.to_string()).expect("config");
        crate::train::tensor_io::write(&tmp.path().join(ADAPTER_WEIGHTS), &tensors[..3])
            .expect("write");
        assert!(AdapterDelta::from_peft_dir(tmp.path()).is_err());
    }

    #[test]
    fn replayed_order_counts_sequences_and_tokens() {
        let examples: Vec<Example> = (0..5)
            .map(|i| Example {
                tokens: vec![1; 4 + i],
                prompt_len: 2,
            })
            .collect();
        let lengths = examples.iter().map(|e| e.tokens.len()).collect::<Vec<_>>();
        // Batch size 2 over 5 examples: 3 batches per epoch.
        let one_epoch = sequences_seen(DataOrder::new(lengths.clone(), 2, 3), &examples, 3);
        assert_eq!(one_epoch.sequences, 5);
        assert_eq!(one_epoch.input_tokens, (3..8).sum::<u64>());
        assert_eq!(one_epoch.answer_tokens, (2..7).sum::<u64>());
        let two_epochs = sequences_seen(DataOrder::new(lengths, 2, 3), &examples, 6);
        assert_eq!(two_epochs.sequences, 10);
        let dose = TrainingDose::new(3, two_epochs, 5, None);
        assert!(close(dose.epochs, 2.0));
    }
}
