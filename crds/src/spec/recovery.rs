//! Recovery: LoRA fine-tuning of each pruned model, on the original or the distilled answers,
//! optionally with logit distillation from the unpruned model.

use std::fmt;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A recovery method. A method fixes two things: which answers the pruned model trains on
/// (original or distilled) and whether the loss includes logit distillation (forward KL against
/// the unpruned teacher, weighted by `kd.ratio`).
///
/// | method | training answers | loss |
/// |---|---|---|
/// | `none` | — (no training) | — |
/// | `sft` | original | cross-entropy |
/// | `self-distill` | distilled | cross-entropy |
/// | `logit-kd` | original | KL only |
/// | `sft+logit-kd` | original | (1 - ratio)·CE + ratio·KL |
/// | `self-distill+logit-kd` | distilled | (1 - ratio)·CE + ratio·KL |
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
// Bounds the string for the apiserver's CEL cost estimate.
#[schemars(extend("maxLength" = 32))]
pub enum RecoveryMethod {
    /// No recovery: the pruned model as is.
    #[serde(rename = "none")]
    None,
    /// Supervised fine-tuning on the original answers.
    #[serde(rename = "sft")]
    Sft,
    /// Fine-tuning on the answers rewritten by the unpruned model.
    #[serde(rename = "self-distill")]
    SelfDistill,
    /// Logit distillation only, on the original prompts and answers.
    #[serde(rename = "logit-kd")]
    LogitKd,
    /// Cross-entropy on the original answers plus logit distillation.
    #[serde(rename = "sft+logit-kd")]
    SftLogitKd,
    /// Cross-entropy on the distilled answers plus logit distillation.
    #[serde(rename = "self-distill+logit-kd")]
    SelfDistillLogitKd,
}

/// Which answers a recovery method trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingData {
    /// The data sets' own answers.
    Original,
    /// The answers rewritten by the unpruned model (outputs of the distill stages).
    Distilled,
}

/// The loss of a recovery method; `kd` weight 0 means no teacher is needed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRecipe {
    /// Which answers to train on.
    pub data: TrainingData,
    /// Weight of the next-token cross-entropy.
    pub cross_entropy_weight: f64,
    /// Weight of the forward KL against the unpruned teacher's logits.
    pub kd_weight: f64,
}

impl TrainingRecipe {
    /// Whether the unpruned teacher must be loaded.
    pub fn needs_teacher(&self) -> bool {
        self.kd_weight > 0.0
    }
}

impl RecoveryMethod {
    /// Every method, in the order they are listed in the schema.
    pub const ALL: [RecoveryMethod; 6] = [
        RecoveryMethod::None,
        RecoveryMethod::Sft,
        RecoveryMethod::SelfDistill,
        RecoveryMethod::LogitKd,
        RecoveryMethod::SftLogitKd,
        RecoveryMethod::SelfDistillLogitKd,
    ];

    /// The name used in manifests (`self-distill+logit-kd`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryMethod::None => "none",
            RecoveryMethod::Sft => "sft",
            RecoveryMethod::SelfDistill => "self-distill",
            RecoveryMethod::LogitKd => "logit-kd",
            RecoveryMethod::SftLogitKd => "sft+logit-kd",
            RecoveryMethod::SelfDistillLogitKd => "self-distill+logit-kd",
        }
    }

    /// The name used in stage ids and Kubernetes object names (`+` becomes `-`).
    pub fn slug(self) -> &'static str {
        match self {
            RecoveryMethod::SftLogitKd => "sft-logit-kd",
            RecoveryMethod::SelfDistillLogitKd => "self-distill-logit-kd",
            other => other.as_str(),
        }
    }

    /// Which data the method trains on; `None` for `none`.
    pub fn training_data(self) -> Option<TrainingData> {
        match self {
            RecoveryMethod::None => None,
            RecoveryMethod::Sft | RecoveryMethod::LogitKd | RecoveryMethod::SftLogitKd => {
                Some(TrainingData::Original)
            }
            RecoveryMethod::SelfDistill | RecoveryMethod::SelfDistillLogitKd => {
                Some(TrainingData::Distilled)
            }
        }
    }

    /// Whether the loss includes logit distillation.
    pub fn uses_logit_kd(self) -> bool {
        matches!(
            self,
            RecoveryMethod::LogitKd
                | RecoveryMethod::SftLogitKd
                | RecoveryMethod::SelfDistillLogitKd
        )
    }

    /// The training recipe for this method with KD mixing ratio `kd_ratio`; `None` for `none`.
    pub fn recipe(self, kd_ratio: f64) -> Option<TrainingRecipe> {
        let data = self.training_data()?;
        let (cross_entropy_weight, kd_weight) = match self {
            RecoveryMethod::LogitKd => (0.0, 1.0),
            m if m.uses_logit_kd() => (1.0 - kd_ratio, kd_ratio),
            _ => (1.0, 0.0),
        };
        Some(TrainingRecipe {
            data,
            cross_entropy_weight,
            kd_weight,
        })
    }
}

impl fmt::Display for RecoveryMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A linear layer LoRA adapts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query projection.
    QProj,
    /// Attention key projection.
    KProj,
    /// Attention value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
}

impl LoraTarget {
    /// All seven projections of a Llama block.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];
}

/// LoRA adapter shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoraSpec {
    /// Adapter rank r.
    #[serde(default = "default_rank")]
    #[schemars(range(min = 1, max = 1024))]
    pub rank: u32,
    /// Scaling numerator alpha (scale = alpha / r, or alpha / sqrt(r) with rslora).
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.0, max = 4096.0))]
    pub alpha: f64,
    /// Dropout on the adapter input during training.
    #[serde(default = "default_dropout")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub dropout: f64,
    /// Projections that get an adapter (default: all seven).
    #[serde(default = "default_targets")]
    #[schemars(length(min = 1, max = 7))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub target_modules: Vec<LoraTarget>,
    /// Rank-stabilized LoRA scaling (alpha / sqrt(r)).
    #[serde(default)]
    pub rslora: bool,
    /// QLoRA: keep the frozen base weights of the seven projections quantized in memory while
    /// the adapters train (in f32), dequantized block by block for each layer's matmuls. The
    /// merged model is written in the base's float dtype (the dequantized weights plus the
    /// adapter), the adapter in PEFT format. CPU only in this version. Unset: a float base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_quantization: Option<BaseQuantization>,
}

/// A block format for the frozen base of a QLoRA fine-tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("maxLength" = 8))]
pub enum BaseQuantization {
    /// GGUF Q8_0: blocks of 32 signed bytes and one f16 scale (8.5 bits per weight).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// GGUF Q4_0: blocks of 32 4-bit values and one f16 scale (4.5 bits per weight).
    #[serde(rename = "q4_0")]
    Q4_0,
    /// GGUF Q4_1: blocks of 32 4-bit values, an f16 scale and an f16 minimum (5 bits).
    #[serde(rename = "q4_1")]
    Q4_1,
    /// GGUF Q4_K: super-blocks of 256 values with 6-bit sub-block scales (4.5 bits); rows
    /// must be a multiple of 256 values long.
    #[serde(rename = "q4_k")]
    Q4K,
    /// NF4 as bitsandbytes defines it: blocks of 64, the 16-value normal-float code book,
    /// one f32 absmax per block (4.5 bits; no double quantization).
    #[serde(rename = "nf4")]
    Nf4,
}

impl BaseQuantization {
    pub const ALL: [BaseQuantization; 5] = [
        BaseQuantization::Q8_0,
        BaseQuantization::Q4_0,
        BaseQuantization::Q4_1,
        BaseQuantization::Q4K,
        BaseQuantization::Nf4,
    ];

    /// The name used in the resource and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BaseQuantization::Q8_0 => "q8_0",
            BaseQuantization::Q4_0 => "q4_0",
            BaseQuantization::Q4_1 => "q4_1",
            BaseQuantization::Q4K => "q4_k",
            BaseQuantization::Nf4 => "nf4",
        }
    }
}

impl fmt::Display for BaseQuantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BaseQuantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown base quantization `{s}` (valid: {})",
                    Self::ALL.map(|q| q.as_str()).join(", ")
                )
            })
    }
}

fn default_rank() -> u32 {
    16
}

fn default_alpha() -> f64 {
    32.0
}

fn default_dropout() -> f64 {
    0.05
}

fn default_targets() -> Vec<LoraTarget> {
    LoraTarget::ALL.to_vec()
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            rank: default_rank(),
            alpha: default_alpha(),
            dropout: default_dropout(),
            target_modules: default_targets(),
            rslora: false,
            base_quantization: None,
        }
    }
}

/// AdamW optimizer and schedule (linear warm-up, then cosine decay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.learningRate > 0.0").message("spec.recovery.optimizer.learningRate must be greater than 0").field_path(".learningRate"),
    validation = Rule::new("self.warmupSteps <= self.steps").message("spec.recovery.optimizer.warmupSteps must not exceed steps").field_path(".warmupSteps")
)]
pub struct OptimizerSpec {
    /// Peak learning rate.
    #[serde(default = "default_learning_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub learning_rate: f64,
    /// AdamW weight decay.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight_decay: f64,
    /// Linear warm-up steps.
    #[serde(default = "default_warmup_steps")]
    #[schemars(range(max = 1000000))]
    pub warmup_steps: u32,
    /// Optimizer steps.
    #[serde(default = "default_steps")]
    #[schemars(range(min = 1, max = 1000000))]
    pub steps: u32,
    /// Sequences per micro-batch.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: u32,
    /// Micro-batches per optimizer step.
    #[serde(default = "default_grad_accumulation")]
    #[schemars(range(min = 1, max = 1024))]
    pub grad_accumulation: u32,
    /// Gradient clipping norm; 0 disables clipping.
    #[serde(default = "default_max_grad_norm")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub max_grad_norm: f64,
    /// Longer examples are truncated to this many tokens.
    #[serde(default = "default_max_seq_len")]
    #[schemars(range(min = 16, max = 32768))]
    pub max_seq_len: u32,
    /// Seed for adapter initialisation, dropout and data order.
    #[serde(default)]
    pub seed: u32,
}

fn default_learning_rate() -> f64 {
    1e-4
}

fn default_warmup_steps() -> u32 {
    10
}

fn default_steps() -> u32 {
    100
}

fn default_batch_size() -> u32 {
    4
}

fn default_grad_accumulation() -> u32 {
    1
}

fn default_max_grad_norm() -> f64 {
    1.0
}

fn default_checkpoint_every() -> u32 {
    50
}

fn default_max_seq_len() -> u32 {
    512
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec {
            learning_rate: default_learning_rate(),
            weight_decay: 0.0,
            warmup_steps: default_warmup_steps(),
            steps: default_steps(),
            batch_size: default_batch_size(),
            grad_accumulation: default_grad_accumulation(),
            max_grad_norm: default_max_grad_norm(),
            max_seq_len: default_max_seq_len(),
            seed: 0,
        }
    }
}

/// Logit distillation settings (methods with `logit-kd`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.ratio >= 0.0 && self.ratio <= 1.0").message("spec.recovery.kd.ratio must be between 0 and 1").field_path(".ratio"),
    validation = Rule::new("self.temperature > 0.0").message("spec.recovery.kd.temperature must be greater than 0").field_path(".temperature")
)]
pub struct KdSpec {
    /// Softmax temperature applied to teacher and student logits.
    #[serde(default = "default_kd_temperature")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub temperature: f64,
    /// Weight of the KL term; the cross-entropy gets 1 - ratio (`logit-kd` alone uses KL only).
    #[serde(default = "default_kd_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub ratio: f64,
    /// Hidden-state distillation (Minitron) added to the logit loss: chosen student layers
    /// match the outputs of the teacher layers they were cut from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_states: Option<HiddenStatesKd>,
}

/// Hidden-state distillation: for each chosen layer of the pruned model, the normalized
/// squared error `‖h_s − h_t‖² / ‖h_t‖²` between its output and that of the teacher layer it
/// was cut from (layers paired through depth pruning; where width pruning removed embedding
/// channels, the teacher's kept channels are compared), averaged over layers and answer
/// tokens and added to the loss with `weight`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.weight > 0.0").message("spec.recovery.kd.hiddenStates.weight must be greater than 0").field_path(".weight"))]
pub struct HiddenStatesKd {
    /// Weight of the term in the loss.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub weight: f64,
    /// Layers of the pruned model whose outputs are matched (0-based); empty: every layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub layers: Vec<u32>,
}

fn default_kd_temperature() -> f64 {
    1.0
}

fn default_kd_ratio() -> f64 {
    0.5
}

impl Default for KdSpec {
    fn default() -> Self {
        KdSpec {
            temperature: default_kd_temperature(),
            ratio: default_kd_ratio(),
            hidden_states: None,
        }
    }
}

/// Recovery of each pruned model: one LoRA fine-tune per block size and method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Methods to run: none, sft, self-distill, logit-kd, sft+logit-kd, self-distill+logit-kd.
    /// `none` evaluates the pruned model without training.
    #[serde(default = "default_methods")]
    #[schemars(length(min = 1, max = 6))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub methods: Vec<RecoveryMethod>,
    /// LoRA adapter shape.
    #[serde(default)]
    pub lora: LoraSpec,
    /// Optimizer and schedule.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Logit distillation settings.
    #[serde(default)]
    pub kd: KdSpec,
    /// Save a resumable checkpoint every this many steps (a restarted stage resumes from the
    /// last one); 0 saves only the final adapter.
    #[serde(default = "default_checkpoint_every")]
    #[schemars(range(max = 1000000))]
    pub checkpoint_every: u32,
    /// Train on at most this many items (after each data set's own limit); unset means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub train_limit: Option<u32>,
    /// Noise-floor control: for each seed one more `sft` fine-tune that differs from the `sft`
    /// arm only in `optimizer.seed` (adapter initialisation, dropout, data order). Its eval
    /// variant is `n<N>-sft-seed<S>`; the report pairs it with `n<N>-sft`, so the difference
    /// that training noise alone makes is measured beside the methods' differences. Needs `sft`
    /// among the methods; each seed must differ from `optimizer.seed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub control_seeds: Vec<u32>,
    /// Teacher correction (Minitron): before distilling, a LoRA fine-tune of the unpruned
    /// model on the original answers of `spec.distillation.datasets`, merged into it. The
    /// corrected model is then the teacher of every `logit-kd` method and the model that
    /// rewrites the data for self-data distillation; the base of evaluation stays the
    /// unpruned model. Uses `lora` and `optimizer` unless overridden here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_correction: Option<TeacherCorrectionSpec>,
    /// Preference stages (DPO, SPIN) after the fine-tunes of `preference.after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<super::preference::PreferenceSpec>,
}

/// Teacher correction's own schedule; the rest comes from `spec.recovery.lora` and
/// `spec.recovery.optimizer`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeacherCorrectionSpec {
    /// Optimizer steps; default `spec.recovery.optimizer.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub steps: Option<u32>,
    /// Peak learning rate; default `spec.recovery.optimizer.learningRate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub learning_rate: Option<f64>,
}

fn default_methods() -> Vec<RecoveryMethod> {
    vec![
        RecoveryMethod::None,
        RecoveryMethod::Sft,
        RecoveryMethod::SelfDistill,
    ]
}

impl Default for RecoverySpec {
    fn default() -> Self {
        RecoverySpec {
            methods: default_methods(),
            lora: LoraSpec::default(),
            optimizer: OptimizerSpec::default(),
            kd: KdSpec::default(),
            checkpoint_every: default_checkpoint_every(),
            train_limit: None,
            control_seeds: Vec::new(),
            teacher_correction: None,
            preference: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_data_and_loss() {
        let r = |m: RecoveryMethod| m.recipe(0.3);
        assert_eq!(r(RecoveryMethod::None), None);
        let sft = r(RecoveryMethod::Sft).unwrap();
        assert_eq!(
            (sft.data, sft.cross_entropy_weight, sft.kd_weight),
            (TrainingData::Original, 1.0, 0.0)
        );
        let sd = r(RecoveryMethod::SelfDistill).unwrap();
        assert_eq!(
            (sd.data, sd.cross_entropy_weight, sd.kd_weight),
            (TrainingData::Distilled, 1.0, 0.0)
        );
        let kd = r(RecoveryMethod::LogitKd).unwrap();
        assert_eq!(
            (kd.data, kd.cross_entropy_weight, kd.kd_weight),
            (TrainingData::Original, 0.0, 1.0)
        );
        let mix = r(RecoveryMethod::SelfDistillLogitKd).unwrap();
        assert_eq!(mix.data, TrainingData::Distilled);
        assert!((mix.cross_entropy_weight - 0.7).abs() < 1e-12 && mix.kd_weight == 0.3);
        assert!(mix.needs_teacher() && !sd.needs_teacher());
    }

    #[test]
    fn names_and_slugs() {
        for m in RecoveryMethod::ALL {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<RecoveryMethod>(&json).unwrap(), m);
            let slug = m.slug();
            assert!(
                slug.bytes().all(|c| c.is_ascii_lowercase() || c == b'-'),
                "{slug}"
            );
        }
        assert_eq!(RecoveryMethod::SftLogitKd.slug(), "sft-logit-kd");
        let slugs: std::collections::BTreeSet<&str> =
            RecoveryMethod::ALL.iter().map(|m| m.slug()).collect();
        assert_eq!(slugs.len(), RecoveryMethod::ALL.len(), "slugs are unique");
    }
}
