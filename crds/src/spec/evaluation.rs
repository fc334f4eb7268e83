//! Benchmarks (lm-eval-harness semantics) and output drift.

use std::fmt;
use std::str::FromStr;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{builtin_uri_message, builtin_uri_rule, DatasetFormat, DatasetRef};
use crate::builtin::BuiltinDataset;

/// A benchmark task.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EvalTaskName {
    /// ARC-Easy, acc_norm.
    ArcEasy,
    /// ARC-Challenge, acc_norm.
    ArcChallenge,
    /// HellaSwag, acc_norm.
    Hellaswag,
    /// PIQA, acc_norm.
    Piqa,
    /// Winogrande, acc (partial scoring).
    Winogrande,
    /// MMLU, acc (macro average over subjects).
    Mmlu,
    /// TruthfulQA mc2.
    #[serde(rename = "truthfulqa_mc2")]
    TruthfulqaMc2,
    /// GSM8K, exact match of the final number (generation).
    Gsm8k,
    /// Perplexity on held-out text (lower is better; not part of the average).
    Perplexity,
    /// KL(base ‖ model) per token on the perplexity task's held-out text: how far the model's
    /// next-token distributions are from the base model's (lower is better; 0 for the base;
    /// not part of the average). The base model's eval writes the reference distributions.
    Kl,
    /// Negative log-likelihood per token of held-out instruction answers given their prompts
    /// (chat template as in fine-tuning; default: Alpaca records 4500 onwards, which no example
    /// trains on); lower is better; not part of the average.
    AnswerNll,
}

impl EvalTaskName {
    /// Every task.
    pub const ALL: [EvalTaskName; 11] = [
        EvalTaskName::ArcEasy,
        EvalTaskName::ArcChallenge,
        EvalTaskName::Hellaswag,
        EvalTaskName::Piqa,
        EvalTaskName::Winogrande,
        EvalTaskName::Mmlu,
        EvalTaskName::TruthfulqaMc2,
        EvalTaskName::Gsm8k,
        EvalTaskName::Perplexity,
        EvalTaskName::Kl,
        EvalTaskName::AnswerNll,
    ];

    /// The tasks run when none are given: the seven zero-shot multiple-choice tasks.
    pub const DEFAULT: [EvalTaskName; 7] = [
        EvalTaskName::ArcEasy,
        EvalTaskName::ArcChallenge,
        EvalTaskName::Hellaswag,
        EvalTaskName::Piqa,
        EvalTaskName::Winogrande,
        EvalTaskName::Mmlu,
        EvalTaskName::TruthfulqaMc2,
    ];

    /// The task name as written in manifests (lm-eval's task name).
    pub fn as_str(self) -> &'static str {
        match self {
            EvalTaskName::ArcEasy => "arc_easy",
            EvalTaskName::ArcChallenge => "arc_challenge",
            EvalTaskName::Hellaswag => "hellaswag",
            EvalTaskName::Piqa => "piqa",
            EvalTaskName::Winogrande => "winogrande",
            EvalTaskName::Mmlu => "mmlu",
            EvalTaskName::TruthfulqaMc2 => "truthfulqa_mc2",
            EvalTaskName::Gsm8k => "gsm8k",
            EvalTaskName::Perplexity => "perplexity",
            EvalTaskName::Kl => "kl",
            EvalTaskName::AnswerNll => "answer_nll",
        }
    }

    /// The task's facts: data, metric, chance level, default shots, output type.
    pub fn def(self) -> &'static TaskDef {
        match self {
            EvalTaskName::ArcEasy => &ARC_EASY,
            EvalTaskName::ArcChallenge => &ARC_CHALLENGE,
            EvalTaskName::Hellaswag => &HELLASWAG,
            EvalTaskName::Piqa => &PIQA,
            EvalTaskName::Winogrande => &WINOGRANDE,
            EvalTaskName::Mmlu => &MMLU,
            EvalTaskName::TruthfulqaMc2 => &TRUTHFULQA_MC2,
            EvalTaskName::Gsm8k => &GSM8K,
            EvalTaskName::Perplexity => &PERPLEXITY,
            EvalTaskName::Kl => &KL,
            EvalTaskName::AnswerNll => &ANSWER_NLL,
        }
    }

    /// The bundled data set the task reads when no `uri` is given.
    pub fn default_dataset(self) -> BuiltinDataset {
        self.def().docs
    }

    /// Whether a higher value is better (false for perplexity).
    pub fn higher_is_better(self) -> bool {
        self.def().metric.higher_is_better()
    }

    /// The task that reads `dataset` (as documents or as its few-shot pool), if any.
    pub fn reading(dataset: BuiltinDataset) -> Option<EvalTaskName> {
        Self::ALL
            .into_iter()
            .find(|t| t.def().datasets().any(|d| d == dataset))
    }
}

impl fmt::Display for EvalTaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An evaluation task name that pruneforge does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown evaluation task `{name}`; known: {known}")]
pub struct UnknownTask {
    /// The name that was asked for.
    pub name: String,
    /// Comma-separated list of known names.
    pub known: String,
}

impl FromStr for EvalTaskName {
    type Err = UnknownTask;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTask {
                name: s.to_string(),
                known: Self::ALL.map(EvalTaskName::as_str).join(", "),
            })
    }
}

/// How a task's documents are scored (lm-eval's `output_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputType {
    /// One log-likelihood request per choice.
    MultipleChoice,
    /// Greedy generation until a stop sequence.
    GenerateUntil,
    /// Rolling log-likelihood of whole texts (perplexity).
    LoglikelihoodRolling,
    /// Log-likelihood of a continuation given its context.
    Loglikelihood,
}

impl OutputType {
    /// lm-eval's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputType::MultipleChoice => "multiple_choice",
            OutputType::GenerateUntil => "generate_until",
            OutputType::LoglikelihoodRolling => "loglikelihood_rolling",
            OutputType::Loglikelihood => "loglikelihood",
        }
    }
}

/// The metric a task is summarised by (its value in the summary, recovery and averages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MainMetric {
    /// lm-eval's `acc_norm`: log-likelihood ÷ characters of the choice (Open LLM Leaderboard v1).
    AccNorm,
    /// Accuracy (argmax of the log-likelihood).
    Acc,
    /// Mean over subjects of the subject accuracy (`acc`, the micro average, is reported too).
    AccMacro,
    /// TruthfulQA mc2: the normalised probability mass of the true answers (lm-eval names it
    /// `acc`; both keys are written).
    Mc2,
    /// Exact match of the last number of the answer (small models rarely write `#### n`; the
    /// strict match is reported too).
    ExactMatchFlexible,
    /// Token-level perplexity (lower is better; never averaged).
    Perplexity,
    /// Mean KL(base ‖ model) per scored token, in nats (lower is better; never averaged).
    KlPerToken,
    /// Mean negative log-likelihood per answer token, in nats (lower is better; never
    /// averaged).
    NllPerAnswerToken,
}

impl MainMetric {
    /// The metric's name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            MainMetric::AccNorm => "acc_norm",
            MainMetric::Acc => "acc",
            MainMetric::AccMacro => "acc_macro",
            MainMetric::Mc2 => "mc2",
            MainMetric::ExactMatchFlexible => "exact_match,flexible-extract",
            MainMetric::Perplexity => "perplexity",
            MainMetric::KlPerToken => "kl_per_token",
            MainMetric::NllPerAnswerToken => "nll_per_answer_token",
        }
    }

    /// The metric's key in lm-eval's `results` (`<metric>,<filter>`).
    pub fn results_key(self) -> &'static str {
        match self {
            MainMetric::AccNorm => "acc_norm,none",
            MainMetric::Acc => "acc,none",
            MainMetric::AccMacro => "acc_macro,none",
            MainMetric::Mc2 => "mc2,none",
            MainMetric::ExactMatchFlexible => "exact_match,flexible-extract",
            MainMetric::Perplexity => "perplexity,none",
            MainMetric::KlPerToken => "kl_per_token,none",
            MainMetric::NllPerAnswerToken => "nll_per_answer_token,none",
        }
    }

    /// Whether a higher value is better; the accuracy-like metrics (all but perplexity, KL and
    /// answer NLL) are the ones averaged.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            MainMetric::Perplexity | MainMetric::KlPerToken | MainMetric::NllPerAnswerToken
        )
    }
}

/// The facts of one evaluation task. The runner keeps only the builder of each task's
/// documents and the scoring; everything declarative is here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskDef {
    /// The scored documents when no `uri` is given (the public slice).
    pub docs: BuiltinDataset,
    /// Where few-shot examples come from (PIQA: with its label file); `None`: the task has no
    /// few-shot split (TruthfulQA's prompt holds fixed examples; perplexity has no prompt).
    pub fewshot_pool: Option<BuiltinDataset>,
    /// Other bundled splits the task can score (given as the task's `uri`).
    pub other_splits: &'static [BuiltinDataset],
    /// The summary metric.
    pub metric: MainMetric,
    /// The main metric's expected value for a model that guesses: the mean of 1 ÷ the number
    /// of choices (mc2: of the share of true answers) over the public slice, rounded; 0 for
    /// exact match; `None` for perplexity.
    pub chance: Option<f64>,
    /// Few-shot examples per document when the spec gives none.
    pub default_shots: u32,
    /// How the documents are scored.
    pub output_type: OutputType,
}

impl TaskDef {
    /// Every bundled data set the task reads: its documents, its few-shot pool, its other
    /// splits.
    pub fn datasets(&self) -> impl Iterator<Item = BuiltinDataset> + '_ {
        std::iter::once(self.docs)
            .chain(self.fewshot_pool)
            .chain(self.other_splits.iter().copied())
    }
}

/// 4 choices for all but a handful of items (3 or 5); the mean of 1 ÷ choices over the
/// public slice is 0.2504.
const ARC_EASY: TaskDef = TaskDef {
    docs: BuiltinDataset::ArcEasy,
    fewshot_pool: Some(BuiltinDataset::ArcEasyTrain),
    other_splits: &[],
    metric: MainMetric::AccNorm,
    chance: Some(0.25),
    default_shots: 0,
    output_type: OutputType::MultipleChoice,
};

/// As ARC-Easy (mean of 1 ÷ choices over the public slice: 0.2504).
const ARC_CHALLENGE: TaskDef = TaskDef {
    docs: BuiltinDataset::ArcChallenge,
    fewshot_pool: Some(BuiltinDataset::ArcChallengeTrain),
    other_splits: &[],
    metric: MainMetric::AccNorm,
    chance: Some(0.25),
    default_shots: 0,
    output_type: OutputType::MultipleChoice,
};

/// 4 endings; shots from the public validation slice without the scored item.
const HELLASWAG: TaskDef = TaskDef {
    docs: BuiltinDataset::Hellaswag,
    fewshot_pool: Some(BuiltinDataset::Hellaswag),
    other_splits: &[],
    metric: MainMetric::AccNorm,
    chance: Some(0.25),
    default_shots: 0,
    output_type: OutputType::MultipleChoice,
};

/// 2 solutions; shots from the public validation slice without the scored item.
const PIQA: TaskDef = TaskDef {
    docs: BuiltinDataset::Piqa,
    fewshot_pool: Some(BuiltinDataset::Piqa),
    other_splits: &[],
    metric: MainMetric::AccNorm,
    chance: Some(0.5),
    default_shots: 0,
    output_type: OutputType::MultipleChoice,
};

/// 2 options, partial scoring: the continuation is shared, so normalisation changes nothing.
const WINOGRANDE: TaskDef = TaskDef {
    docs: BuiltinDataset::Winogrande,
    fewshot_pool: Some(BuiltinDataset::WinograndeTrain),
    other_splits: &[],
    metric: MainMetric::Acc,
    chance: Some(0.5),
    default_shots: 0,
    output_type: OutputType::MultipleChoice,
};

/// 4 choices; 5-shot from dev (first n) by default; the validation split can be scored
/// instead of test.
const MMLU: TaskDef = TaskDef {
    docs: BuiltinDataset::Mmlu,
    fewshot_pool: Some(BuiltinDataset::MmluDev),
    other_splits: &[BuiltinDataset::MmluVal],
    metric: MainMetric::AccMacro,
    chance: Some(0.25),
    default_shots: 5,
    output_type: OutputType::MultipleChoice,
};

/// Equal likelihoods give mc2 = the share of true answers; its mean over the public slice
/// is 0.448.
const TRUTHFULQA_MC2: TaskDef = TaskDef {
    docs: BuiltinDataset::TruthfulqaMc2,
    fewshot_pool: None,
    other_splits: &[],
    metric: MainMetric::Mc2,
    chance: Some(0.448),
    default_shots: 0,
    output_type: OutputType::MultipleChoice,
};

/// 5-shot from train by default; guessing a number is (almost) never right.
const GSM8K: TaskDef = TaskDef {
    docs: BuiltinDataset::Gsm8kTest,
    fewshot_pool: Some(BuiltinDataset::Gsm8kTrain),
    other_splits: &[],
    metric: MainMetric::ExactMatchFlexible,
    chance: Some(0.0),
    default_shots: 5,
    output_type: OutputType::GenerateUntil,
};

/// Held-out text (the Alpaca calibration stream); no prompts, no chance level.
const PERPLEXITY: TaskDef = TaskDef {
    docs: BuiltinDataset::Alpaca,
    fewshot_pool: None,
    other_splits: &[],
    metric: MainMetric::Perplexity,
    chance: None,
    default_shots: 0,
    output_type: OutputType::LoglikelihoodRolling,
};

/// The perplexity task's held-out rows, scored against the base model's next-token
/// distributions; no prompts, no chance level.
const KL: TaskDef = TaskDef {
    docs: BuiltinDataset::Alpaca,
    fewshot_pool: None,
    other_splits: &[],
    metric: MainMetric::KlPerToken,
    chance: None,
    default_shots: 0,
    output_type: OutputType::LoglikelihoodRolling,
};

/// Held-out instruction answers (Alpaca records from [`ANSWER_NLL_FIRST_RECORD`] on, when no
/// `uri` is given), scored like fine-tuning scores them; no few-shot, no chance level.
const ANSWER_NLL: TaskDef = TaskDef {
    docs: BuiltinDataset::Alpaca,
    fewshot_pool: None,
    other_splits: &[],
    metric: MainMetric::NllPerAnswerToken,
    chance: None,
    default_shots: 0,
    output_type: OutputType::Loglikelihood,
};

/// The first bundled Alpaca record of the `answer_nll` task: the last 500 of the 5,000, clear of
/// the calibration stream and the held-out rows (the first ~420 records) and of the records the
/// examples distill and train on.
pub const ANSWER_NLL_FIRST_RECORD: usize = 4500;

/// One benchmark run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(format!("!has(self.uri) || {}", crate::uri::cel_scheme_rule("self.uri"))).message(format!("spec.evaluation.tasks[].uri: only the schemes {} are supported (or builtin:<name>, or a plain path)", crate::uri::schemes_prose().replace(" or ", " and ")).as_str()).field_path(".uri"),
    validation = Rule::new(format!("!has(self.uri) || ({})", builtin_uri_rule())).message(builtin_uri_message("spec.evaluation.tasks[]")).field_path(".uri")
)]
pub struct EvalTask {
    /// arc_easy, arc_challenge, hellaswag, piqa, winogrande, mmlu, truthfulqa_mc2, gsm8k,
    /// perplexity, kl or answer_nll.
    pub name: EvalTaskName,
    /// Few-shot examples per prompt (taken from the task's train/dev split). Unset: the task's
    /// standard setting, 5 for mmlu (from dev) and gsm8k (from train), 0 for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 25))]
    pub shots: Option<u32>,
    /// Score at most this many items; unset means the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub limit: Option<u32>,
    /// Read the items from here instead of the task's bundled public slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub uri: Option<String>,
}

impl EvalTask {
    /// A zero-shot task on its bundled public slice.
    pub fn new(name: EvalTaskName) -> Self {
        EvalTask {
            name,
            shots: None,
            limit: None,
            uri: None,
        }
    }
}

/// Output drift (the forgetting measure of the Cerebras paper): for the same prompts, the
/// base model's and the variant's greedy responses are embedded (mean-pooled final hidden
/// state of the base model) and compared by cosine similarity; the mean is reported (higher =
/// closer to the base).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// Measure drift for every pruned, fine-tuned and merged model (on by default; `false`
    /// saves the generation time).
    #[serde(default = "default_drift_enabled")]
    pub enabled: bool,
    /// Prompt source (instructions are used, answers ignored). Default: Alpaca records
    /// 4400-4431, which no example distills, trains on or measures otherwise.
    #[serde(default = "default_drift_prompts")]
    pub prompts: DatasetRef,
    /// Number of prompts.
    #[serde(default = "default_drift_limit")]
    #[schemars(range(min = 1, max = 100000))]
    pub limit: u32,
    /// New tokens generated per prompt.
    #[serde(default = "default_drift_max_new_tokens")]
    #[schemars(range(min = 1, max = 8192))]
    pub max_new_tokens: u32,
}

fn default_drift_enabled() -> bool {
    true
}

/// The first bundled Alpaca record of the default drift prompts: clear of the calibration
/// stream, the `kl` rows, the distilled and trained records of the examples (1000-2255), the
/// speculation prompts (4000 on) and the `answer_nll` answers ([`ANSWER_NLL_FIRST_RECORD`] on).
pub const DRIFT_FIRST_RECORD: u32 = 4400;

fn default_drift_prompts() -> DatasetRef {
    DatasetRef {
        offset: DRIFT_FIRST_RECORD,
        ..DatasetRef::builtin(BuiltinDataset::Alpaca, DatasetFormat::Alpaca)
    }
}

fn default_drift_limit() -> u32 {
    32
}

fn default_drift_max_new_tokens() -> u32 {
    64
}

impl Default for DriftSpec {
    fn default() -> Self {
        DriftSpec {
            enabled: default_drift_enabled(),
            prompts: default_drift_prompts(),
            limit: default_drift_limit(),
            max_new_tokens: default_drift_max_new_tokens(),
        }
    }
}

/// Evaluation of the base model and every pruned, fine-tuned and merged model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSpec {
    /// Benchmarks (at most 16, unique names). Default: the seven zero-shot multiple-choice tasks
    /// on their public slices.
    #[serde(default = "default_tasks")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tasks: Vec<EvalTask>,
    /// Seed for few-shot sampling and item order.
    #[serde(default = "default_seed")]
    pub seed: u32,
    /// Sequences scored together (default 32: on 2 CPU cores, 1.26× the throughput of 8 on
    /// ARC-Easy and HellaSwag, with the same predictions).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: u32,
    /// Output drift against the unpruned model.
    #[serde(default)]
    pub drift: DriftSpec,
    /// Few-shot counts for the tasks that do not set `shots`: `openLlmLeaderboard` (the
    /// paper's: ARC-Challenge 25, HellaSwag 10, TruthfulQA mc2 0, MMLU 5, Winogrande 5,
    /// GSM8K 5; other tasks their default) or `zeroShot` (0 everywhere). Unset: each task's
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<EvalPreset>,
}

/// Named few-shot settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EvalPreset {
    /// The Open LLM Leaderboard's shots, as the self-data distillation paper evaluates.
    OpenLlmLeaderboard,
    /// Every task zero-shot.
    ZeroShot,
}

impl EvalPreset {
    /// The shots of `task` under this preset; `None` keeps the task's default.
    pub fn shots(self, task: EvalTaskName) -> Option<u32> {
        if task.def().output_type == OutputType::LoglikelihoodRolling {
            return None;
        }
        match self {
            EvalPreset::ZeroShot => Some(0),
            EvalPreset::OpenLlmLeaderboard => match task {
                EvalTaskName::ArcChallenge => Some(25),
                EvalTaskName::Hellaswag => Some(10),
                EvalTaskName::TruthfulqaMc2 => Some(0),
                EvalTaskName::Mmlu | EvalTaskName::Winogrande | EvalTaskName::Gsm8k => Some(5),
                _ => None,
            },
        }
    }
}

fn default_tasks() -> Vec<EvalTask> {
    EvalTaskName::DEFAULT.map(EvalTask::new).to_vec()
}

fn default_seed() -> u32 {
    1234
}

fn default_batch_size() -> u32 {
    32
}

impl Default for EvaluationSpec {
    fn default() -> Self {
        EvaluationSpec {
            tasks: default_tasks(),
            seed: default_seed(),
            batch_size: default_batch_size(),
            drift: DriftSpec::default(),
            preset: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in EvalTaskName::ALL {
            assert_eq!(t.as_str().parse::<EvalTaskName>(), Ok(t));
            assert_eq!(
                serde_json::to_value(t).expect("serializes"),
                serde_json::Value::String(t.as_str().to_string())
            );
        }
        let err = "arc".parse::<EvalTaskName>().expect_err("unknown");
        assert!(err.to_string().contains("truthfulqa_mc2"), "{err}");
    }

    #[test]
    fn every_builtin_data_set_is_read_by_exactly_one_benchmark() {
        // The held-out text tasks share the Alpaca file: perplexity and kl score the same rows,
        // answer_nll its last records. Every other data set belongs to one benchmark.
        let held_out = [
            EvalTaskName::Perplexity,
            EvalTaskName::Kl,
            EvalTaskName::AnswerNll,
        ];
        for d in BuiltinDataset::ALL {
            let readers: Vec<EvalTaskName> = EvalTaskName::ALL
                .into_iter()
                .filter(|t| t.def().datasets().any(|x| x == d))
                .collect();
            if d == BuiltinDataset::Alpaca {
                assert_eq!(readers, held_out);
            } else {
                assert_eq!(readers.len(), 1, "{d} is read by {readers:?}");
            }
            assert_eq!(EvalTaskName::reading(d), readers.first().copied());
        }
    }

    #[test]
    fn table_facts() {
        for t in EvalTaskName::ALL {
            let def = t.def();
            assert_eq!(
                def.metric.results_key().split(',').next(),
                def.metric.name().split(',').next(),
                "{t}"
            );
            let no_pool = def.fewshot_pool.is_none();
            assert!(
                !(no_pool && def.default_shots > 0),
                "{t}: shots without a pool"
            );
            assert_eq!(def.chance.is_none(), !def.metric.higher_is_better(), "{t}");
            if let Some(chance) = def.chance {
                assert!((0.0..1.0).contains(&chance), "{t}");
            }
        }
        assert_eq!(EvalTaskName::Mmlu.def().default_shots, 5);
        assert_eq!(EvalTaskName::Gsm8k.def().default_shots, 5);
        assert!(!EvalTaskName::Perplexity.higher_is_better());
        assert!(EvalTaskName::DEFAULT
            .iter()
            .all(|t| t.def().output_type == OutputType::MultipleChoice));
    }
}
