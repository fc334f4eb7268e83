//! What a stage request hands a stage, and what the stage hands back.
//!
//! Each stage module owns the mapping from its API parameters and inputs to its work and
//! its summary: `run_request(&params, &StageContext) -> Result<Outcome>`. The executor
//! ([`crate::exec`]) only materialises inputs, picks the stage and commits the outcome.

use crate::device::Compute;
use crate::error::{Result, StageError};
use crate::resolve::Resolver;
use pruneforge_api::contract::StageSummary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which shards of a sharded stage this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardRun {
    /// Every shard, then gather them (the local runner, or a stage of one shard).
    All { count: usize },
    /// One shard of an Indexed Job; its output is the shard's sub-artifact.
    One { index: usize, count: usize },
}

/// Everything a stage reads besides its parameters.
pub struct StageContext<'a> {
    /// Input name → local directory of the input artifact.
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// The stage's work directory (resume state survives a failed attempt here).
    pub work: &'a Path,
    /// Where the stage writes its artifact.
    pub out: &'a Path,
    /// Turns data set references into local files.
    pub resolver: &'a Resolver,
    /// The shards to run (sharded stages only).
    pub shards: ShardRun,
    /// Device and dtype of the model (model-computing stages).
    pub compute: &'a Compute,
    /// Where the stage saves resume state in the job's storage (fine-tune checkpoints, the
    /// distillation journal), so a new pod resumes after a preemption; `None`: local only.
    pub resume: Option<&'a crate::exec::resume::ResumeStore>,
}

impl StageContext<'_> {
    /// The local directory of input `name`.
    pub fn input(&self, name: &str) -> Result<&Path> {
        self.inputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::Input(format!("the request has no `{name}` input")))
    }

    /// The HF model directory inside input `name`.
    pub fn model(&self, name: &str) -> Result<PathBuf> {
        model_dir_of(self.input(name)?)
    }

    /// Opens the model at `path` on the stage's device in its dtype.
    pub fn open_model(&self, path: &Path) -> Result<crate::loader::HfModel> {
        Ok(crate::loader::open_model_on(
            path,
            &self.compute.device,
            self.compute.dtype,
        )?)
    }

    /// Inputs whose names start with `prefix`, in name order.
    pub fn inputs_with_prefix<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = (&'s str, &'s Path)> + 's {
        self.inputs
            .iter()
            .filter(move |(n, _)| n.starts_with(prefix))
            .map(|(n, p)| (n.as_str(), p.as_path()))
    }
}

/// Opens the model at `path` on `compute` after checking that the stage's estimated peak
/// memory (`need`, from the model's config) fits the device: a clear refusal with needed vs
/// available instead of an out-of-memory crash.
pub fn open_model_checked(
    path: &Path,
    compute: &Compute,
    need: impl FnOnce(&crate::model::config::ModelConfig) -> crate::memory_plan::MemoryNeed,
) -> Result<crate::loader::HfModel> {
    open_model_checked_with_base(path, compute, None, need)
}

/// [`open_model_checked`] for a LoRA whose base stays quantized to `base` (QLoRA; CPU f32
/// only in this version, refused elsewhere with what to change). `need` should count the
/// quantized weights ([`crate::memory_plan::quantized_weights_bytes`]).
pub fn open_model_checked_with_base(
    path: &Path,
    compute: &Compute,
    base: Option<crate::model::quant::BaseQuantization>,
    need: impl FnOnce(&crate::model::config::ModelConfig) -> crate::memory_plan::MemoryNeed,
) -> Result<crate::loader::HfModel> {
    if let Some(format) = base {
        if !compute.device.is_cpu() || compute.dtype != candle_core::DType::F32 {
            return Err(StageError::Input(format!(
                "lora.baseQuantization ({format}) runs on the CPU in f32 in this version; this                  stage computes on {:?} in {:?}. Set spec.compute.device: cpu (and dtype f32 or                  auto) for QLoRA, or drop baseQuantization to train over the float base",
                compute.device, compute.dtype
            )));
        }
    }
    let dir = crate::loader::resolve_hf_dir(path)?;
    let config = crate::model::config::ModelConfig::from_json_file(&dir.join("config.json"))?;
    crate::memory_plan::check_fits(&need(&config), &compute.device)?;
    Ok(crate::loader::open_model_with_base(
        &dir,
        &compute.device,
        compute.dtype,
        base,
    )?)
}

/// What a stage returns to the executor.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: StageSummary,
    /// Main files of the artifact, relative to it (listed in the result).
    pub files: Vec<String>,
    /// The output is one shard's sub-artifact (`shards/<index>/`).
    pub sharded: bool,
}

impl Outcome {
    /// An unsharded outcome listing `files`.
    pub fn new(summary: StageSummary, files: &[&str]) -> Self {
        Outcome {
            summary,
            files: files.iter().map(|f| f.to_string()).collect(),
            sharded: false,
        }
    }
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

/// Adds what identifies the model in `dir` for a checkpoint to `h`: the hash of its
/// `config.json` and the names and sizes of its safetensors files (not the path, which differs
/// between the pods of one stage).
pub fn hash_model_identity(h: &mut sha2::Sha256, dir: &Path) {
    use sha2::Digest;
    if let Ok(text) = std::fs::read(dir.join("config.json")) {
        h.update(hex::encode(sha2::Sha256::digest(&text)).as_bytes());
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut sizes: Vec<(String, u64)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect();
        sizes.sort();
        h.update(format!("{sizes:?}").as_bytes());
    }
}

/// The latest training checkpoint under `root` (first restored from `resume` when `root` holds
/// none), loaded into `lora` and `opt`; `None` when there is none. A checkpoint whose
/// fingerprint is not `fingerprint` is refused: `inputs` names what may have changed.
pub fn resume_training(
    root: &Path,
    resume: Option<&crate::exec::resume::ResumeStore>,
    lora: &crate::train::LoraSet,
    opt: &mut crate::train::AdamW,
    fingerprint: &str,
    inputs: &str,
) -> Result<Option<crate::train::checkpoint::TrainState>> {
    if let Some(store) = resume {
        store.restore(root, "checkpoints");
    }
    let resumed = crate::train::checkpoint::load_latest(root, lora, opt)?;
    if let Some(s) = &resumed {
        if s.fingerprint != fingerprint {
            return Err(StageError::Input(format!(
                "{} holds a checkpoint of a different run ({inputs} changed); remove it to \
                 start over, or rerun with the original inputs",
                root.display()
            )));
        }
        tracing::info!(step = s.step, "resuming from checkpoint");
    }
    Ok(resumed)
}
