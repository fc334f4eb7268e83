//! `pruneforge distill`: self-data distillation of one SFT set with the original model.

use pruneforge::stages::distill::{self, DistillParams};
use pruneforge_api::spec::{
    AnswerCheck, DataKind, DatasetFormat, DistillDataset, GenerationSpec, PromptTemplate,
};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DistillArgs {
    /// The ORIGINAL (unpruned) model: HF directory or .gguf; default: the embedded model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// SFT set: a path or builtin:NAME (e.g. builtin:gsm8k-train, builtin:alpaca).
    #[arg(long)]
    pub data: String,
    #[arg(long, value_enum, default_value = "gsm8k")]
    pub format: FormatArg,
    /// `math` checks the last number against the gold answer.
    #[arg(long, value_enum, default_value = "math")]
    pub kind: KindArg,
    #[arg(long)]
    pub limit: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: u32,
    #[arg(long, default_value_t = 8)]
    pub batch_size: u32,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Number of shards the set is split into.
    #[arg(long, default_value_t = 1)]
    pub shard_count: usize,
    /// Run only this shard (default: $JOB_COMPLETION_INDEX, else every shard, then gather).
    #[arg(long)]
    pub shard_index: Option<usize>,
    /// Only gather finished shards.
    #[arg(long)]
    pub gather: bool,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: super::generate::DeviceArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    Alpaca,
    Gsm8k,
    Jsonl,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KindArg {
    General,
    Math,
}

pub fn run(a: DistillArgs) -> anyhow::Result<()> {
    if a.gather {
        let s = distill::gather(&a.out, a.shard_count)?;
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let model = super::generate::model_dir(&a.model)?;
    let params = DistillParams {
        dataset: DistillDataset {
            name: "data".into(),
            uri: a.data.clone(),
            format: match a.format {
                FormatArg::Alpaca => DatasetFormat::Alpaca,
                FormatArg::Gsm8k => DatasetFormat::Gsm8k,
                FormatArg::Jsonl => DatasetFormat::Jsonl,
            },
            fields: None,
            kind: match a.kind {
                KindArg::General => DataKind::General,
                KindArg::Math => DataKind::Math,
            },
            limit: a.limit,
            offset: a.offset,
        },
        template: PromptTemplate::default(),
        answer_check: AnswerCheck::default(),
        generation: GenerationSpec {
            max_new_tokens: a.max_new_tokens,
            temperature: a.temperature,
            top_p: 1.0,
            seed: 0,
            batch_size: a.batch_size,
        },
    };
    let index = a
        .shard_index
        .or_else(distill::shard::completion_index_from_env);
    let resolver = pruneforge::resolve::Resolver::local();
    let compute = a.device.compute()?;
    let summary = match index {
        Some(i) => distill::run_shard(
            &model,
            &params,
            i,
            a.shard_count,
            &a.out,
            &resolver,
            &compute,
        )?,
        None => distill::run(&model, &params, a.shard_count, &a.out, &resolver, &compute)?,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
