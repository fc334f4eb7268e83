//! Resumable checkpoints: adapter values, AdamW moments, step, data position, RNG state and
//! the loss history, written atomically.
//!
//! Layout under the checkpoint root: `step-00000050/` (`adapter_model.safetensors` with PEFT
//! names, `optimizer.safetensors` with `<name>.exp_avg` / `<name>.exp_avg_sq`, `state.json`)
//! and `latest.json` naming the newest complete one. A checkpoint directory is built under a
//! temporary name and renamed into place; only then is `latest.json` replaced (a temporary
//! file renamed over it) and older checkpoints removed, so a crash at any moment leaves the
//! previous checkpoint usable.

use super::batching::DataPosition;
use super::error::{Result, TrainError};
use super::lora::LoraSet;
use super::optimizer::AdamW;
use super::tensor_io::{self, NamedTensor};
use crate::util::fs::{write_json_atomic, StagingDir};
use crate::util::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One optimizer step of the loss curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: u64,
    /// `(1 - r) * ce + r * kd` (`+ w * hidden` with hidden-state KD), mean over the step's
    /// answer tokens.
    pub loss: f64,
    /// Mean cross-entropy (nats/token).
    pub ce: f64,
    /// Mean `T^2 * KL(teacher || student)` (0 without a teacher).
    pub kd: f64,
    /// Mean hidden-state error per answer token and layer pair (hidden-state KD only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<f64>,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Answer tokens of this step.
    pub tokens: u64,
    /// Wall time of the step.
    pub seconds: f64,
}

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Next batch of the data order.
    pub data: DataPosition,
    /// The trainer's random stream (dropout seeds).
    pub rng: SplitMix64,
    /// AdamW update count.
    pub adam_t: u64,
    pub tokens_seen: u64,
    /// Training wall time so far.
    pub elapsed_s: f64,
    pub history: Vec<StepLog>,
    /// Hash of the parameters and inputs; a checkpoint only resumes the run it came from.
    pub fingerprint: String,
    /// Held-out mean NLL of the model before training, when measured.
    #[serde(default)]
    pub heldout_nll_before: Option<f64>,
    /// Preference training's steps (the `prefer` stage; `history` stays empty there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preference_history: Vec<super::preference::PreferenceStepLog>,
}

impl TrainState {
    /// The state before the first step of a run with sampling state `rng` and checkpoint
    /// fingerprint `fingerprint`.
    pub fn fresh(rng: SplitMix64, fingerprint: String) -> Self {
        TrainState {
            step: 0,
            data: Default::default(),
            rng,
            adam_t: 0,
            tokens_seen: 0,
            elapsed_s: 0.0,
            history: Vec::new(),
            fingerprint,
            heldout_nll_before: None,
            preference_history: Vec::new(),
        }
    }
}

const LATEST: &str = "latest.json";
const STATE: &str = "state.json";
const ADAPTER: &str = "adapter_model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";

#[derive(Serialize, Deserialize)]
struct Latest {
    step: u64,
    dir: String,
}

fn optimizer_tensors(lora: &LoraSet, opt: &AdamW) -> Result<Vec<NamedTensor>> {
    let names: Vec<(String, Vec<usize>)> = lora
        .peft_tensors()?
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect();
    if names.len() != opt.m.len() {
        return Err(TrainError::Input(format!(
            "optimizer holds {} buffers for {} adapter tensors",
            opt.m.len(),
            names.len()
        )));
    }
    let mut out = Vec::with_capacity(2 * names.len());
    for ((name, shape), (m, v)) in names.into_iter().zip(opt.m.iter().zip(&opt.v)) {
        out.push((format!("{name}.exp_avg"), shape.clone(), m.clone()));
        out.push((format!("{name}.exp_avg_sq"), shape, v.clone()));
    }
    Ok(out)
}

/// Writes a checkpoint of the current state into `root` and makes it the latest.
pub fn save(root: &Path, lora: &LoraSet, opt: &AdamW, state: &TrainState) -> Result<PathBuf> {
    let name = format!("step-{:08}", state.step);
    let target = root.join(&name);
    let staging = StagingDir::new(&target).map_err(|e| TrainError::io(&target, e))?;
    tensor_io::write(&staging.path().join(ADAPTER), &lora.peft_tensors()?)?;
    tensor_io::write(
        &staging.path().join(OPTIMIZER),
        &optimizer_tensors(lora, opt)?,
    )?;
    let state_path = staging.path().join(STATE);
    write_json_atomic(&state_path, state).map_err(|e| TrainError::io(&state_path, e))?;
    let dir = staging.commit().map_err(|e| TrainError::io(&target, e))?;
    let latest = root.join(LATEST);
    write_json_atomic(
        &latest,
        &Latest {
            step: state.step,
            dir: name.clone(),
        },
    )
    .map_err(|e| TrainError::io(&latest, e))?;
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("step-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(dir)
}

/// The latest checkpoint's state, after loading its tensors into `lora` and `opt`; `None` when
/// `root` has no checkpoint.
pub fn load_latest(root: &Path, lora: &LoraSet, opt: &mut AdamW) -> Result<Option<TrainState>> {
    let latest_path = root.join(LATEST);
    if !latest_path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&latest_path).map_err(|e| TrainError::io(&latest_path, e))?;
    let latest: Latest = serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(&latest_path, format!("not valid: {e}")))?;
    let dir = root.join(&latest.dir);
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(&state_path, format!("not valid: {e}")))?;
    let adapter = dir.join(ADAPTER);
    lora.load_named(&tensor_io::read(&adapter)?, &adapter)?;
    let opt_path = dir.join(OPTIMIZER);
    let moments = tensor_io::read(&opt_path)?;
    let names: Vec<String> = lora
        .peft_tensors()?
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    for (i, name) in names.iter().enumerate() {
        for (suffix, buf) in [("exp_avg", &mut opt.m[i]), ("exp_avg_sq", &mut opt.v[i])] {
            let key = format!("{name}.{suffix}");
            let (_, values) = moments.get(&key).ok_or_else(|| {
                TrainError::checkpoint(&opt_path, format!("tensor `{key}` is missing"))
            })?;
            if values.len() != buf.len() {
                return Err(TrainError::checkpoint(
                    &opt_path,
                    format!(
                        "tensor `{key}` has {} values, expected {}",
                        values.len(),
                        buf.len()
                    ),
                ));
            }
            buf.copy_from_slice(values);
        }
    }
    opt.t = state.adam_t;
    Ok(Some(state))
}
