//! Synthetic stage results for tests and benchmarks: what a runner would report, with numbers
//! derived from the stage (block size, cache key) so different stages report different values.

use std::collections::BTreeMap;

use pruneforge_api::contract::{
    BlockScore, DistillSummary, EvalSummary, FinetuneSummary, ImportSummary, MergeSummary,
    PreferSummary, PruneSummary, ScoreSummary, SelfPlaySummary, SpeculateSummary, StageSummary,
    TaskScore,
};
use pruneforge_api::params::StageParams;
use pruneforge_api::{StageRequest, StageResult};

/// Layers of the synthetic model.
pub const LAYERS: u32 = 30;

fn key_fraction(key: &str) -> f64 {
    let v = u64::from_str_radix(key.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    (v % 1000) as f64 / 1000.0
}

/// A successful result for `request`.
pub fn succeeded(request: &StageRequest) -> StageResult {
    let f = key_fraction(&request.key);
    let summary = match &request.params {
        StageParams::Import(_) => StageSummary::Import(ImportSummary {
            layers: LAYERS,
            parameters: 134_515_008,
        }),
        StageParams::Score(p) => StageSummary::Score(ScoreSummary {
            metric: p.metric,
            layers: LAYERS,
            best: p
                .block_sizes
                .iter()
                .map(|&n| BlockScore {
                    block_size: n,
                    start: LAYERS - 2 - n,
                    end: LAYERS - 3,
                    score: 0.1 + 0.01 * f64::from(n),
                })
                .collect(),
        }),
        StageParams::Prune(p) => StageSummary::Prune(PruneSummary {
            block_size: p.block_size,
            start: p.start.unwrap_or(LAYERS - 2 - p.block_size),
            end: (p.start.unwrap_or(LAYERS - 2 - p.block_size) + p.block_size).saturating_sub(1),
            layers_before: LAYERS,
            layers_after: LAYERS - p.block_size,
            parameters_before: 134_515_008,
            // A width-pruned fake keeps 85 % of each layer's parameters.
            parameters_after: 134_515_008
                - u64::from(p.block_size) * 3_540_096
                - p.width.as_ref().map_or(0, |_| 15_930_432),
            width: p
                .width
                .as_ref()
                .map(|_| "intermediate 1536->1128".to_string()),
        }),
        StageParams::Distill(_) => StageSummary::Distill(DistillSummary {
            items: 32,
            kept: 28,
            kept_rate: 28.0 / 32.0,
        }),
        StageParams::Finetune(_) => StageSummary::Finetune(FinetuneSummary {
            final_loss: 1.0 + f,
            steps: 16,
            tokens: 4096,
        }),
        StageParams::SelfPlay(_) => StageSummary::SelfPlay(SelfPlaySummary {
            prompts: 32,
            pairs: 30,
            empty: 1,
            identical: 1,
        }),
        StageParams::Prefer(_) => StageSummary::Prefer(PreferSummary {
            pairs: 32,
            steps: 8,
            initial_loss: std::f64::consts::LN_2,
            final_loss: 0.6 - 0.1 * f,
            final_margin: 0.1 + 0.1 * f,
            final_accuracy: 0.75,
        }),
        StageParams::Merge(_) => StageSummary::Merge(MergeSummary {
            tensors: 272,
            fallback_count: 3,
        }),
        StageParams::Eval(p) => {
            let base = request.stage_id.as_str() == "eval-base";
            let tasks: Vec<TaskScore> = p
                .tasks
                .iter()
                .map(|t| TaskScore {
                    task: t.name.as_str().to_string(),
                    metric: "acc".into(),
                    value: if base { 0.6 } else { 0.4 + 0.1 * f },
                    stderr: Some(0.02),
                    items: t.limit.map(u64::from),
                })
                .collect();
            let average = (!tasks.is_empty())
                .then(|| tasks.iter().map(|t| t.value).sum::<f64>() / tasks.len() as f64);
            StageSummary::Eval(EvalSummary {
                tasks,
                average,
                recovery: None,
                drift_cosine: None,
            })
        }
        StageParams::Speculate(p) => StageSummary::Speculate(SpeculateSummary {
            acceptance_rate: 0.5 + 0.1 * f,
            mean_accepted_length: 2.5,
            speedup: 1.3,
            draft_tokens: p.draft_tokens,
        }),
    };
    let mut artifacts = BTreeMap::new();
    artifacts.insert(
        "result".to_string(),
        format!("{}result.json", request.output_uri),
    );
    StageResult::succeeded(request, summary, artifacts, 1.5)
}

/// A failed result for `request`.
pub fn failed(request: &StageRequest, message: &str) -> StageResult {
    StageResult::failed(request, message, 0.5)
}
