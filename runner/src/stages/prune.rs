//! Stage `prune`: removes layers, channels or both from a model and writes the result as an
//! HF directory.
//!
//! Width pruning ([`width`]) keeps the most important MLP neurons, KV groups and query heads,
//! and embedding channels by the activation importance `score` wrote next to its
//! `scores.json`; it is chosen on the full model and done before any depth pruning.
//!
//! Depth pruning drops a contiguous block `[start, start + n)`, either given explicitly or the
//! block `score` chose for size `n` (read from its `scores.json`, which must have been computed
//! on the same weights). The layers after the block are renumbered and `num_hidden_layers` is
//! updated. Output: `out_dir/model/` (config, safetensors, tokenizer files) and
//! `out_dir/prune.json` (what was removed, parameters and FLOPs per token before and after).

use crate::loader::{open_model, save_hf_dir};
use crate::model::ModelConfig;
use crate::stages::score::digest::model_sha256;
use crate::stages::score::{
    BlockChoice, ScoreMetric, ScoresFile, WidthImportance, SCORES_FILE, WIDTH_FILE,
};
use crate::stages::{Outcome, Result, StageContext, StageError};
use crate::util::fs::write_json_atomic;
use pruneforge_api::contract::{self, StageSummary};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub mod lineage;
pub mod width;

pub use lineage::{PruningLineage, LINEAGE_FILE};
pub use width::{prune_width, WidthPruned, WidthShapeChange, WidthSize, WidthTargets};

pub const PRUNE_FILE: &str = "prune.json";
/// The pruned model's directory inside the output directory.
pub const MODEL_DIR: &str = "model";
/// Context length at which FLOPs per token are reported unless told otherwise.
pub const DEFAULT_FLOPS_CONTEXT: usize = 128;

/// How to shrink the model: depth (a block of layers), width (neurons, heads, embedding
/// channels; Minitron) or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PruneMethod {
    /// Remove `n` consecutive layers starting at `start`; without `start`, the block chosen
    /// for size `n` in `scores.json`.
    Depth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<usize>,
        n: usize,
    },
    /// Keep the most important channels by the width importance `score` wrote next to
    /// `scores.json`.
    Width { width: WidthTargets },
    /// Width pruning (chosen on the full model), then depth pruning.
    DepthWidth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<usize>,
        n: usize,
        width: WidthTargets,
    },
}

impl PruneMethod {
    /// The layer block `(start, n)` asked for, if any.
    fn depth(&self) -> Option<(Option<usize>, usize)> {
        match self {
            PruneMethod::Depth { start, n } | PruneMethod::DepthWidth { start, n, .. } => {
                Some((*start, *n))
            }
            PruneMethod::Width { .. } => None,
        }
    }

    fn width(&self) -> Option<&WidthTargets> {
        match self {
            PruneMethod::Width { width } | PruneMethod::DepthWidth { width, .. } => Some(width),
            PruneMethod::Depth { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneParams {
    pub method: PruneMethod,
    /// Context length for the FLOPs-per-token figures (attention cost grows with it).
    #[serde(default = "default_flops_context")]
    pub flops_context: usize,
    /// Prune even when `scores.json` was computed on other weights (its model digest differs).
    #[serde(default)]
    pub allow_model_mismatch: bool,
}

fn default_flops_context() -> usize {
    DEFAULT_FLOPS_CONTEXT
}

impl PruneParams {
    pub fn depth(start: Option<usize>, n: usize) -> Self {
        Self {
            method: PruneMethod::Depth { start, n },
            flops_context: DEFAULT_FLOPS_CONTEXT,
            allow_model_mismatch: false,
        }
    }
}

/// Where the removed block came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Selection {
    /// No layer was removed (width pruning only).
    None,
    /// `start` was given.
    Explicit,
    /// Chosen by `score`.
    Scores {
        file: String,
        #[serde(with = "crate::stages::score::choose::metric_serde")]
        metric: ScoreMetric,
        choice: BlockChoice,
    },
}

/// `prune.json`, also the stage summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub method: PruneMethod,
    /// Removed layers, numbered as in the source model.
    pub removed_layers: Vec<usize>,
    pub selection: Selection,
    pub source_model: String,
    pub source_model_sha256: String,
    /// The pruned model's HF directory, relative to the output directory.
    pub model_dir: String,
    pub layers_before: usize,
    pub layers_after: usize,
    pub params_before: u64,
    pub params_after: u64,
    pub flops_context: usize,
    pub flops_per_token_before: u64,
    pub flops_per_token_after: u64,
    /// `params_after / params_before`.
    pub params_ratio: f64,
    /// `flops_per_token_after / flops_per_token_before`.
    pub flops_ratio: f64,
    /// The widths before and after, when width pruning ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<WidthShapeChange>,
}

/// Resolves the block `(start, n)` to remove.
fn resolve_block(
    (start, n): (Option<usize>, usize),
    scores_path: Option<&Path>,
    model_sha: &str,
    layers: usize,
    allow_mismatch: bool,
) -> Result<(usize, usize, Selection)> {
    if n == 0 || n >= layers {
        return Err(StageError::Input(format!(
            "cannot remove {n} layers from a model of {layers}: n must be 1..={}",
            layers.saturating_sub(1)
        )));
    }
    if let Some(start) = start {
        if start + n > layers {
            return Err(StageError::Input(format!(
                "block {start}..={} does not fit a model of {layers} layers (0..={})",
                start + n - 1,
                layers - 1
            )));
        }
        return Ok((start, n, Selection::Explicit));
    }
    let path = scores_path.ok_or_else(|| {
        StageError::Input(
            "no block to remove: give its start, or a scores.json from `pruneforge score` to choose it"
                .into(),
        )
    })?;
    let scores = ScoresFile::read(path)?;
    if scores.model.num_hidden_layers != layers {
        return Err(StageError::Input(format!(
            "{} scores a model of {} layers, this one has {layers}",
            path.display(),
            scores.model.num_hidden_layers
        )));
    }
    if scores.model.sha256 != model_sha {
        if !allow_mismatch {
            return Err(StageError::Input(format!(
                "{} was computed on other weights (model sha256 {} vs {model_sha}); re-run `score` on this model or set allow_model_mismatch",
                path.display(),
                scores.model.sha256
            )));
        }
        tracing::warn!(scores = %path.display(), "pruning with scores of other weights");
    }
    let choice = scores.chosen(n)?.clone();
    if choice.n != n || choice.start + n > layers {
        return Err(StageError::Input(format!(
            "{}: the chosen block for n = {n} (start {}) is inconsistent",
            path.display(),
            choice.start
        )));
    }
    Ok((
        choice.start,
        n,
        Selection::Scores {
            file: path.display().to_string(),
            metric: scores.metric,
            choice,
        },
    ))
}

/// The width importance `score` wrote next to `scores` (its `scores.json`), checked against
/// the model's digest.
fn read_width_importance(
    scores: Option<&Path>,
    model_sha: &str,
    allow_mismatch: bool,
) -> Result<WidthImportance> {
    let dir = scores.and_then(Path::parent).ok_or_else(|| {
        StageError::Input(
            "width pruning needs the output of `pruneforge score --width` (give its scores.json; the width importance lies next to it)".into(),
        )
    })?;
    let path = dir.join(WIDTH_FILE);
    if !path.exists() {
        return Err(StageError::Input(format!(
            "{} is missing: run `score` with width importance (`--width`) to prune width",
            path.display()
        )));
    }
    let importance = WidthImportance::read(&path)?;
    if importance.model_sha256 != model_sha {
        if !allow_mismatch {
            return Err(StageError::Input(format!(
                "{} was computed on other weights (model sha256 {} vs {model_sha}); re-run `score` on this model or set allow_model_mismatch",
                path.display(),
                importance.model_sha256
            )));
        }
        tracing::warn!(importance = %path.display(), "pruning with width importance of other weights");
    }
    Ok(importance)
}

/// Prunes the model at `model_path` (HF directory or .gguf). `scores` is the `scores.json` of
/// `score` (needed when the method has no explicit start).
pub fn run(
    model_path: &Path,
    scores: Option<&Path>,
    params: &PruneParams,
    out_dir: &Path,
) -> Result<PruneReport> {
    let target = out_dir.join(MODEL_DIR);
    if target.exists() && !target.join("config.json").exists() {
        return Err(StageError::Input(format!(
            "{} exists and is not a model directory; refusing to replace it (choose another output directory)",
            target.display()
        )));
    }
    let mut hf = open_model(model_path)?;
    let sha = model_sha256(&hf.dir)?;
    let before: ModelConfig = hf.model.config.clone();
    let layers = hf.model.num_layers();
    let block = params
        .method
        .depth()
        .map(|d| resolve_block(d, scores, &sha, layers, params.allow_model_mismatch))
        .transpose()?;
    let width = match params.method.width() {
        Some(targets) => {
            let importance = read_width_importance(scores, &sha, params.allow_model_mismatch)?;
            Some(prune_width(&mut hf.model, &importance, targets)?)
        }
        None => None,
    };
    let kept_hidden = width.as_ref().map(|w| w.kept_hidden.clone());
    let width = width.map(|w| w.change);
    let (removed, selection) = match block {
        Some((start, n, selection)) => {
            hf.model.remove_layers(start, n)?;
            ((start..start + n).collect(), selection)
        }
        None => (Vec::new(), Selection::None),
    };
    let after = &hf.model.config;
    save_hf_dir(&hf.model, &hf.tokenizer, &target, hf.stored_dtype)?;
    PruningLineage::new(layers, before.hidden_size, &removed, kept_hidden, &sha).write(&target)?;
    let (pb, pa) = (before.parameter_count(), after.parameter_count());
    let (fb, fa) = (
        before.flops_per_token(params.flops_context),
        after.flops_per_token(params.flops_context),
    );
    let method = match (&params.method, removed.first()) {
        (PruneMethod::Depth { n, .. }, Some(&start)) => PruneMethod::Depth {
            start: Some(start),
            n: *n,
        },
        (PruneMethod::DepthWidth { n, width, .. }, Some(&start)) => PruneMethod::DepthWidth {
            start: Some(start),
            n: *n,
            width: width.clone(),
        },
        (other, _) => other.clone(),
    };
    let report = PruneReport {
        method,
        removed_layers: removed,
        selection,
        source_model: model_path.display().to_string(),
        source_model_sha256: sha,
        model_dir: MODEL_DIR.into(),
        layers_before: layers,
        layers_after: after.num_hidden_layers,
        params_before: pb,
        params_after: pa,
        flops_context: params.flops_context,
        flops_per_token_before: fb,
        flops_per_token_after: fa,
        params_ratio: pa as f64 / pb.max(1) as f64,
        flops_ratio: fa as f64 / fb.max(1) as f64,
        width,
    };
    let path = out_dir.join(PRUNE_FILE);
    write_json_atomic(&path, &report).map_err(|e| StageError::io(&path, e))?;
    tracing::info!(
        removed = ?report.removed_layers,
        layers = report.layers_after,
        params_before = pb,
        params_after = pa,
        "pruned model written to {}",
        target.display()
    );
    Ok(report)
}

/// The method a stage request asks for: a block (`blockSize` > 0), width targets, or both.
fn method_of(p: &pruneforge_api::params::PruneParams) -> PruneMethod {
    let start = p.start.map(|s| s as usize);
    let n = p.block_size as usize;
    match (n, &p.width) {
        (_, None) => PruneMethod::Depth { start, n },
        (0, Some(width)) => PruneMethod::Width {
            width: width.clone(),
        },
        (n, Some(width)) => PruneMethod::DepthWidth {
            start,
            n,
            width: width.clone(),
        },
    }
}

/// The stage contract's `prune`: input `model`, and `scores` (the score stage) unless the
/// request names the start.
pub fn run_request(p: &pruneforge_api::params::PruneParams, ctx: &StageContext) -> Result<Outcome> {
    let model = ctx.model("model")?;
    let scores = ctx.inputs.get("scores").map(|d| d.join(SCORES_FILE));
    let mut params = PruneParams::depth(None, 1);
    params.method = method_of(p);
    let r = run(&model, scores.as_deref(), &params, ctx.out)?;
    let start = r.removed_layers.first().copied().unwrap_or(0);
    let end = r.removed_layers.last().copied().unwrap_or(0);
    Ok(Outcome::new(
        StageSummary::Prune(contract::PruneSummary {
            block_size: p.block_size,
            start: start as u32,
            end: end as u32,
            layers_before: r.layers_before as u32,
            layers_after: r.layers_after as u32,
            parameters_before: r.params_before,
            parameters_after: r.params_after,
            width: r.width.as_ref().map(WidthShapeChange::describe),
        }),
        &[PRUNE_FILE, "model/config.json"],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_depth_width_or_both() {
        let width = WidthTargets {
            intermediate_size: Some(WidthSize::Count(8)),
            ..WidthTargets::default()
        };
        let req = |block_size, width: Option<WidthTargets>| pruneforge_api::params::PruneParams {
            block_size,
            start: None,
            width,
            width_variant: None,
        };
        assert_eq!(
            method_of(&req(6, None)),
            PruneMethod::Depth { start: None, n: 6 }
        );
        assert_eq!(
            method_of(&req(0, Some(width.clone()))),
            PruneMethod::Width {
                width: width.clone()
            }
        );
        assert_eq!(
            method_of(&req(2, Some(width.clone()))),
            PruneMethod::DepthWidth {
                start: None,
                n: 2,
                width
            }
        );
    }

    #[test]
    fn params_deserialize() {
        let p: PruneParams =
            serde_json::from_str(r#"{"method": {"kind": "depth", "n": 6}}"#).unwrap();
        assert_eq!(p, PruneParams::depth(None, 6));
        let p: PruneParams = serde_json::from_str(
            r#"{"method": {"kind": "depth", "start": 13, "n": 6}, "flops_context": 2048}"#,
        )
        .unwrap();
        assert_eq!(
            p.method,
            PruneMethod::Depth {
                start: Some(13),
                n: 6
            }
        );
        assert_eq!(p.flops_context, 2048);
        assert!(serde_json::from_str::<PruneParams>(r#"{"method": {"kind": "width"}}"#).is_err());
        let p: PruneParams = serde_json::from_str(
            r#"{"method": {"kind": "depth_width", "n": 2, "width": {"hiddenSize": "90%"}}}"#,
        )
        .unwrap();
        assert_eq!(p.method.depth(), Some((None, 2)));
        assert_eq!(
            p.method.width().and_then(|w| w.hidden_size.clone()),
            Some(WidthSize::Percent("90%".into()))
        );
    }
}
