//! Output drift, the forgetting measure of the Cerebras paper: the base model and a candidate
//! answer the same prompts (greedy); both responses are embedded with the BASE model
//! (mean-pooled final hidden state, after the final norm) and compared by cosine similarity.
//! The mean over prompts is reported; higher = closer to the base model.

use crate::generate::{generate_all, GenerateParams};
use crate::loader::HfModel;
use crate::model::{ForwardOptions, Llama};
use crate::resolve::Resolver;
use crate::stages::{Result, StageError};
use crate::tokenizer::ChatMessage;
use candle_core::Tensor;
use pruneforge_api::spec::DriftSpec;
use serde::{Deserialize, Serialize};

/// The drift report inside an eval artifact.
pub const DRIFT_JSON: &str = "drift.json";
/// The base model's responses and their embeddings, in the base model's eval artifact: every
/// variant's eval reads them instead of generating them again.
pub const DRIFT_BASE_JSON: &str = "drift_base.json";

/// The base side of a drift measurement: computed once per job (by the base model's eval).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriftBase {
    /// The settings these responses answer (reused only when a variant's are the same).
    pub spec: DriftSpec,
    /// The base model's greedy response per prompt.
    pub responses: Vec<String>,
    /// Their embeddings under the base model (`None` for an empty response).
    pub embeddings: Vec<Option<Vec<f64>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriftReport {
    pub prompts: usize,
    pub mean_cosine: f64,
    pub min_cosine: f64,
    /// One entry per prompt: cosine and the two responses.
    pub items: Vec<DriftItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriftItem {
    pub index: usize,
    pub cosine: f64,
    pub base: String,
    pub candidate: String,
}

/// Mean-pooled final hidden state of `model` over `ids` (empty → `None`).
pub fn embed(model: &Llama, ids: &[u32]) -> Result<Option<Vec<f64>>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), model.device())?;
    let h = model.forward(&t, ForwardOptions::default())?.last_hidden;
    // The mean in f32 whatever the model's dtype (bf16/f16 models on a GPU or the CPU).
    let normed = model
        .final_norm(&h, false)?
        .to_dtype(candle_core::DType::F32)?;
    let mean = normed.mean(1)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Some(mean.into_iter().map(f64::from).collect()))
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na * nb)).clamp(-1.0, 1.0)
}

/// The drift prompts, chat-formatted for `model`.
fn prompts(model: &HfModel, spec: &DriftSpec, resolver: &Resolver) -> Result<Vec<Vec<u32>>> {
    let mut prompts_ref = spec.prompts.clone();
    prompts_ref.limit = Some(spec.limit);
    let data = super::inputs::load_sft(&prompts_ref, resolver)?;
    if data.records.is_empty() {
        return Err(StageError::Input(
            "evaluation.drift.prompts selects no records".into(),
        ));
    }
    Ok(data
        .records
        .iter()
        .map(|r| {
            model.tokenizer.encode_chat(
                &[ChatMessage::user(super::distill::instruction_text(r))],
                true,
            )
        })
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

fn generate_params(spec: &DriftSpec) -> GenerateParams {
    GenerateParams {
        max_new_tokens: spec.max_new_tokens as usize,
        ..Default::default()
    }
}

/// The base model's responses to the drift prompts and their embeddings.
pub fn base_responses(base: &HfModel, spec: &DriftSpec, resolver: &Resolver) -> Result<DriftBase> {
    let prompts = prompts(base, spec, resolver)?;
    let (responses, _) = generate_all(
        &base.model,
        &base.tokenizer,
        &prompts,
        &generate_params(spec),
    )?;
    let mut embeddings = Vec::with_capacity(responses.len());
    for r in &responses {
        embeddings.push(embed(&base.model, &base.tokenizer.encode(&r.text, false)?)?);
    }
    Ok(DriftBase {
        spec: spec.clone(),
        responses: responses.into_iter().map(|r| r.text).collect(),
        embeddings,
    })
}

/// Drift of `candidate` against the base side computed by [`base_responses`] (`base` embeds
/// the candidate's responses).
pub fn measure_against(
    base: &HfModel,
    base_side: &DriftBase,
    candidate: &HfModel,
    resolver: &Resolver,
) -> Result<DriftReport> {
    let prompts = prompts(candidate, &base_side.spec, resolver)?;
    if prompts.len() != base_side.responses.len() {
        return Err(StageError::Input(format!(
            "the base model's drift responses answer {} prompts, the prompts now select {}",
            base_side.responses.len(),
            prompts.len()
        )));
    }
    let (b, _) = generate_all(
        &candidate.model,
        &candidate.tokenizer,
        &prompts,
        &generate_params(&base_side.spec),
    )?;
    let mut items = Vec::with_capacity(b.len());
    for (i, ((ra, ea), rb)) in base_side
        .responses
        .iter()
        .zip(&base_side.embeddings)
        .zip(&b)
        .enumerate()
    {
        let eb = embed(&base.model, &base.tokenizer.encode(&rb.text, false)?)?;
        let cos = match (ea, eb) {
            (Some(x), Some(y)) => cosine(x, &y),
            (None, None) => 1.0,
            _ => 0.0,
        };
        items.push(DriftItem {
            index: i,
            cosine: cos,
            base: ra.clone(),
            candidate: rb.text.clone(),
        });
    }
    let n = items.len();
    let mean_cosine = items.iter().map(|x| x.cosine).sum::<f64>() / n as f64;
    let min_cosine = items.iter().map(|x| x.cosine).fold(f64::INFINITY, f64::min);
    Ok(DriftReport {
        prompts: n,
        mean_cosine,
        min_cosine,
        items,
    })
}

/// Drift of `candidate` against `base`, generating the base side too.
pub fn measure(
    base: &HfModel,
    candidate: &HfModel,
    spec: &DriftSpec,
    resolver: &Resolver,
) -> Result<DriftReport> {
    let base_side = base_responses(base, spec, resolver)?;
    measure_against(base, &base_side, candidate, resolver)
}

#[cfg(test)]
mod tests {
    use super::cosine;

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
