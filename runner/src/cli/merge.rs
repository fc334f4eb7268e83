//! `pruneforge merge --models A B [--t 0.5 | --t 0,0.5,1] [--method slerp|linear] --out DIR`,
//! and the task-vector methods against a base model:
//! `pruneforge merge --base PRUNED --models A B --method nuslerp|task-arithmetic|ties
//! [--weights 1,0.5] [--density 0.5] [--lambda 1] [--normalize | --no-normalize] --out DIR`.

use anyhow::Context;
use pruneforge::stages::merge::{self, FilteredT, MergeMethod, MergeParams, TValue};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Models to merge (HF directories or .gguf files); for slerp and linear the first is t = 0
    /// unless --base says otherwise.
    #[arg(long, num_args = 1.., required = true)]
    pub models: Vec<PathBuf>,
    /// mergekit's base_model and the source of config and tokenizer. slerp, linear: the t = 0
    /// model, added to the inputs when it is not among --models. nuslerp, task-arithmetic,
    /// ties (required): the model the fine-tunes started from (the pruned model); the task
    /// vectors are each model minus it, and it must not be among --models.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// slerp (exactly 2 models), linear, nuslerp (exactly 2 models and --base),
    /// task-arithmetic or ties (--base).
    #[arg(long, value_enum, default_value = "slerp")]
    pub method: MethodArg,
    /// Interpolation factor: a number, or comma-separated gradient anchors spread over the
    /// layers (mergekit semantics), e.g. 0,0.5,1.
    #[arg(long, default_value = "0.5", value_parser = parse_t)]
    pub t: TValue,
    /// A t for tensors whose name contains FILTER, e.g. self_attn=0,0.5,1 (repeatable; the
    /// first match wins, --t applies to the rest).
    #[arg(long = "t-filter", value_name = "FILTER=T", value_parser = parse_filter)]
    pub t_filter: Vec<FilteredT>,
    /// One weight per model (comma-separated): linear, base first; task-arithmetic and ties,
    /// per model of --models (the base has none). Default: 1 each.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub weights: Option<Vec<f64>>,
    /// ties: share of each task vector's entries kept, the largest in magnitude, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub density: f64,
    /// task-arithmetic, ties: scale of the merged task vector.
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// Divide by the sum of the weights (ties: of the agreeing models); the default for linear
    /// and ties.
    #[arg(long, conflicts_with = "no_normalize")]
    pub normalize: bool,
    /// Do not divide by the sum of the weights; the default for task-arithmetic.
    #[arg(long)]
    pub no_normalize: bool,
    /// Output HF directory (merged weights, copied config/tokenizer, merge.json).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MethodArg {
    Slerp,
    Linear,
    Nuslerp,
    TaskArithmetic,
    Ties,
}

impl MethodArg {
    fn method(self) -> MergeMethod {
        match self {
            MethodArg::Slerp => MergeMethod::Slerp,
            MethodArg::Linear => MergeMethod::Linear,
            MethodArg::Nuslerp => MergeMethod::Nuslerp,
            MethodArg::TaskArithmetic => MergeMethod::TaskArithmetic,
            MethodArg::Ties => MergeMethod::Ties,
        }
    }
}

fn parse_t(s: &str) -> Result<TValue, String> {
    let values: Vec<f64> = s
        .split(',')
        .map(|v| {
            v.trim().parse::<f64>().map_err(|_| {
                format!("`{v}` is not a number (t is a number or a list like 0,0.5,1)")
            })
        })
        .collect::<Result<_, _>>()?;
    let t = match values.as_slice() {
        [one] => TValue::Scalar(*one),
        _ => TValue::List(values),
    };
    t.validate()?;
    Ok(t)
}

fn parse_filter(s: &str) -> Result<FilteredT, String> {
    let (filter, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected FILTER=T, e.g. self_attn=0,0.5,1"))?;
    if filter.is_empty() {
        return Err(format!("`{s}`: the filter before `=` is empty"));
    }
    Ok(FilteredT {
        filter: Some(filter.to_string()),
        value: parse_t(value)?,
    })
}

pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let t = if args.t_filter.is_empty() {
        args.t
    } else {
        let mut conds = args.t_filter;
        conds.push(FilteredT {
            filter: None,
            value: args.t,
        });
        TValue::Filtered(conds)
    };
    let method = args.method.method();
    if method.uses_task_vectors() && args.base.is_none() {
        anyhow::bail!(
            "--method {method} merges task vectors (each model minus the base): give --base, the \
             model the fine-tuned models started from (the pruned model)"
        );
    }
    let normalize = match (args.normalize, args.no_normalize) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let params = MergeParams {
        method,
        t,
        weights: args.weights,
        normalize,
        density: args.density,
        lambda: args.lambda,
    };
    let summary = merge::run(&args.models, args.base.as_deref(), &params, &args.out)
        .with_context(|| format!("merging into {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
