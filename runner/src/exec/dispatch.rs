//! From a stage request to the stage function, and from the stage's own summary to the
//! contract's compact summary.

use super::request::ExecContext;
use crate::stages::{self, Result, StageError};
use pruneforge_api::contract::{self as c, StageRequest, StageSummary};
use pruneforge_api::params::StageParams;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct DispatchOutcome {
    pub summary: StageSummary,
    /// Main files of the artifact, relative to it (listed in the result).
    pub files: Vec<String>,
    /// The output is one shard's sub-artifact (`shards/<index>/`).
    pub sharded: bool,
}

/// The HF model directory inside a model-producing artifact: the artifact root (import,
/// merge) or its `model/` (prune) or `merged/` (finetune) subdirectory.
pub fn model_dir_of(artifact: &Path) -> Result<PathBuf> {
    for sub in ["", "model", "merged"] {
        let d = if sub.is_empty() {
            artifact.to_path_buf()
        } else {
            artifact.join(sub)
        };
        if d.join("config.json").exists() {
            return Ok(d);
        }
    }
    Err(StageError::Input(format!(
        "{}: no model (config.json) in this artifact",
        artifact.display()
    )))
}

fn model_input(inputs: &BTreeMap<String, PathBuf>, name: &str) -> Result<PathBuf> {
    model_dir_of(input(inputs, name)?)
}

fn input<'a>(inputs: &'a BTreeMap<String, PathBuf>, name: &str) -> Result<&'a Path> {
    inputs
        .get(name)
        .map(PathBuf::as_path)
        .ok_or_else(|| StageError::Input(format!("the request has no `{name}` input")))
}

pub fn dispatch(
    req: &StageRequest,
    inputs: &BTreeMap<String, PathBuf>,
    work: &Path,
    out: &Path,
    ctx: &ExecContext,
) -> Result<DispatchOutcome> {
    let root = ctx.data_root.as_ref();
    match &req.params {
        StageParams::Import(p) => {
            let s = stages::import::run(p, &work.join("download"), out)?;
            Ok(DispatchOutcome {
                summary: StageSummary::Import(c::ImportSummary {
                    layers: s.layers as u32,
                    parameters: s.parameters,
                }),
                files: vec![
                    "config.json".into(),
                    "model.safetensors".into(),
                    "tokenizer.json".into(),
                ],
                sharded: false,
            })
        }
        StageParams::Distill(p) => {
            let model = &model_input(inputs, "model")?;
            let (count, index) = match req.shard {
                Some(s) => (s.count as usize, s.index as usize),
                None => (1, 0),
            };
            let (s, sharded) = if ctx.all_shards || count == 1 {
                (stages::distill::run(model, p, count, out, root)?, false)
            } else {
                let index = stages::distill::shard::completion_index_from_env().unwrap_or(index);
                (
                    stages::distill::run_shard(model, p, index, count, out, root)?,
                    true,
                )
            };
            Ok(DispatchOutcome {
                summary: StageSummary::Distill(c::DistillSummary {
                    items: s.items as u64,
                    kept: s.kept as u64,
                    kept_rate: s.kept_rate,
                }),
                files: vec!["distill.json".into(), "records.jsonl".into()],
                sharded,
            })
        }
        StageParams::Speculate(p) => {
            let s = stages::speculate::run(
                &model_input(inputs, "target")?,
                &model_input(inputs, "draft")?,
                p,
                out,
                root,
            )?;
            Ok(DispatchOutcome {
                summary: StageSummary::Speculate(c::SpeculateSummary {
                    acceptance_rate: s.acceptance_rate,
                    mean_accepted_length: s.mean_accepted_length,
                    speedup: s.speedup,
                    draft_tokens: s.draft_tokens as u32,
                }),
                files: vec!["speculate.json".into(), "speculate.jsonl".into()],
                sharded: false,
            })
        }
        StageParams::Score(p) => {
            use pruneforge_api::spec::ScoreMetric as M;
            use stages::score::{CalibrationData, ScoreMetric, ScoreParams};
            let model = model_input(inputs, "model")?;
            let params = ScoreParams {
                calibration: CalibrationData::Text {
                    dataset: p.calibration.dataset.uri.clone(),
                    field: p
                        .calibration
                        .dataset
                        .fields
                        .as_ref()
                        .map(|f| f.instruction.clone()),
                    packing: Default::default(),
                },
                num_sequences: p.calibration.sequences as usize,
                sequence_length: p.calibration.seq_len as usize,
                block_sizes: Some(p.block_sizes.iter().map(|&n| n as usize).collect()),
                metric: match p.metric {
                    M::AngularLastToken => ScoreMetric::AngularLastToken,
                    M::AngularAllTokens => ScoreMetric::AngularAllTokens,
                    M::BlockInfluence => ScoreMetric::BlockInfluence,
                    M::Perplexity => ScoreMetric::Perplexity,
                },
                include_first_layer: !p.exclude_first_layer,
                include_last_layer: !p.exclude_last_layer,
                ..ScoreParams::default()
            };
            let s = stages::score::run(&model, &params, out)?;
            let layers = crate::model::ModelConfig::from_json_file(&model.join("config.json"))?
                .num_hidden_layers;
            Ok(DispatchOutcome {
                summary: StageSummary::Score(c::ScoreSummary {
                    metric: p.metric,
                    layers: layers as u32,
                    best: s
                        .blocks
                        .iter()
                        .filter_map(|b| b.chosen.as_ref())
                        .map(|b| c::BlockScore {
                            block_size: b.n as u32,
                            start: b.start as u32,
                            end: b.end as u32,
                            score: b.score,
                        })
                        .collect(),
                }),
                files: s.files.clone(),
                sharded: false,
            })
        }
        StageParams::Prune(p) => {
            let model = model_input(inputs, "model")?;
            let scores = inputs.get("scores").map(|d| d.join("scores.json"));
            let params = stages::prune::PruneParams::depth(
                p.start.map(|s| s as usize),
                p.block_size as usize,
            );
            let r = stages::prune::run(&model, scores.as_deref(), &params, out)?;
            let start = r.removed_layers.first().copied().unwrap_or(0);
            let end = r.removed_layers.last().copied().unwrap_or(0);
            Ok(DispatchOutcome {
                summary: StageSummary::Prune(c::PruneSummary {
                    block_size: p.block_size,
                    start: start as u32,
                    end: end as u32,
                    layers_before: r.layers_before as u32,
                    layers_after: r.layers_after as u32,
                    parameters_before: r.params_before,
                    parameters_after: r.params_after,
                }),
                files: vec!["prune.json".into(), "model/config.json".into()],
                sharded: false,
            })
        }
        StageParams::Eval(p) => {
            let model = model_input(inputs, "model")?;
            let base_eval = inputs.get("base-eval").map(|d| d.join("eval.json"));
            let params = stages::eval::EvalParams {
                tasks: p
                    .tasks
                    .iter()
                    .map(|t| stages::eval::TaskSpec {
                        name: t.name.as_str().to_string(),
                        shots: t.shots.map(|s| s as usize),
                        limit: t.limit.map(|l| l as usize),
                        offset: 0,
                        uri: t.uri.clone(),
                    })
                    .collect(),
                seed: p.seed as i64,
                batch_size: p.batch_size.max(1) as usize,
                data_dir: ctx.data_root.as_ref().map(|r| r.dir().to_path_buf()),
                ..stages::eval::EvalParams::default()
            };
            let s = stages::eval::run(&model, base_eval.as_deref(), &params, out)?;
            let mut summary = s.to_contract();
            if let (Some(spec), Some(base)) = (&p.drift, inputs.get("base")) {
                let base = crate::model::open_model(&model_dir_of(base)?)?;
                let cand = crate::model::open_model(&model)?;
                let report = stages::drift::measure(&base, &cand, spec, root)?;
                crate::util::fs::write_json_atomic(&out.join("drift.json"), &report)
                    .map_err(|e| StageError::io(out, e))?;
                summary.drift_cosine = Some(report.mean_cosine);
            }
            Ok(DispatchOutcome {
                summary: StageSummary::Eval(summary),
                files: vec!["eval.json".into(), "items.jsonl".into()],
                sharded: false,
            })
        }
        StageParams::Merge(p) => {
            // model-0, model-1, … in order; the first is mergekit's t = 0 end.
            let mut models = Vec::new();
            for i in 0.. {
                match inputs.get(&format!("model-{i}")) {
                    Some(m) => models.push(model_dir_of(m)?),
                    None => break,
                }
            }
            let method = match p.method {
                pruneforge_api::spec::MergeMethod::Slerp => stages::merge::MergeMethod::Slerp,
                pruneforge_api::spec::MergeMethod::Linear => stages::merge::MergeMethod::Linear,
            };
            let t = if p.t_gradient.is_empty() {
                stages::merge::TValue::Scalar(p.t)
            } else {
                stages::merge::TValue::List(p.t_gradient.clone())
            };
            let params = stages::merge::MergeParams {
                method,
                t,
                weights: None,
                normalize: true,
            };
            let s = stages::merge::run(&models, None, &params, out)?;
            Ok(DispatchOutcome {
                summary: StageSummary::Merge(c::MergeSummary {
                    tensors: s.tensors as u64,
                    fallback_count: s.fallback_count as u64,
                }),
                files: vec!["config.json".into(), "merge.json".into()],
                sharded: false,
            })
        }
        StageParams::Finetune(p) => {
            let student = model_input(inputs, "model")?;
            let teacher = match p.recipe.needs_teacher() {
                true => Some(model_input(inputs, "teacher")?),
                false => None,
            };
            let data_files = finetune_data(p, inputs, work, root)?;
            let params = finetune_params(p);
            let s = stages::finetune::run(&student, teacher.as_deref(), &data_files, &params, out)?;
            // Checkpoints are resume state, not a result: keep them out of the artifact.
            let _ = std::fs::remove_dir_all(out.join("checkpoints"));
            Ok(DispatchOutcome {
                summary: StageSummary::Finetune(c::FinetuneSummary {
                    final_loss: s.final_loss,
                    steps: s.steps,
                    tokens: s.tokens,
                }),
                files: vec![
                    "finetune.json".into(),
                    "adapter_config.json".into(),
                    "adapter_model.safetensors".into(),
                    "merged/config.json".into(),
                ],
                sharded: false,
            })
        }
    }
}

/// The training files of a finetune request: the distill stages' outputs (inputs
/// `data-<name>`, in name order) or the original data sets, written to the work directory in
/// a schema the finetune reader detects.
fn finetune_data(
    p: &pruneforge_api::params::FinetuneParams,
    inputs: &BTreeMap<String, PathBuf>,
    work: &Path,
    root: Option<&crate::data::DataRoot>,
) -> Result<Vec<PathBuf>> {
    use crate::data::sft::{FieldMap, SftSchema};
    use pruneforge_api::spec::TrainingData;
    let mut files = Vec::new();
    match p.recipe.data {
        TrainingData::Distilled => {
            for (name, dir) in inputs.iter().filter(|(n, _)| n.starts_with("data-")) {
                let scratch = work.join("gathered").join(name);
                files.push(stages::distill::distilled_data(dir, &scratch)?);
            }
            if files.is_empty() {
                return Err(StageError::Input(
                    "this recovery method trains on distilled data, but the request has no \
                     `data-<name>` input from a distill stage"
                        .into(),
                ));
            }
        }
        TrainingData::Original => {
            for d in &p.datasets {
                let mut ds = stages::inputs::load_sft(&d.dataset_ref(), root)?;
                // Custom field names are not detectable: store with the Alpaca names.
                if matches!(ds.schema, SftSchema::Jsonl(_)) {
                    ds.schema = SftSchema::Jsonl(FieldMap::alpaca());
                }
                let dir = work.join("original");
                std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
                let path = dir.join(format!("{}.jsonl", d.name));
                ds.write(&path)?;
                files.push(path);
            }
            if files.is_empty() {
                return Err(StageError::Input(
                    "no training data: set spec.distillation.datasets".into(),
                ));
            }
        }
    }
    Ok(files)
}

/// The runner's fine-tuning parameters for the API's.
fn finetune_params(p: &pruneforge_api::params::FinetuneParams) -> stages::finetune::FinetuneParams {
    use crate::train::{KdParams, LoraParams, OptimizerParams};
    let o = &p.optimizer;
    let defaults = stages::finetune::FinetuneParams::default();
    stages::finetune::FinetuneParams {
        lora: LoraParams {
            rank: p.lora.rank as usize,
            alpha: p.lora.alpha,
            dropout: p.lora.dropout,
            target_modules: p
                .lora
                .target_modules
                .iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            rslora: p.lora.rslora,
        },
        optimizer: OptimizerParams {
            lr: o.learning_rate,
            weight_decay: o.weight_decay,
            warmup_steps: o.warmup_steps as u64,
            steps: o.steps as u64,
            batch_size: o.batch_size as usize,
            grad_accum: o.grad_accumulation as usize,
            max_grad_norm: o.max_grad_norm,
            max_seq_len: o.max_seq_len as usize,
            seed: o.seed as u64,
            ..OptimizerParams::default()
        },
        kd: p.recipe.needs_teacher().then(|| KdParams {
            temperature: p.kd_temperature.unwrap_or(1.0),
            ratio: p.recipe.kd_weight,
        }),
        checkpoint_every: p.checkpoint_every as u64,
        limit: p.train_limit.map(|l| l as usize),
        ..defaults
    }
}
