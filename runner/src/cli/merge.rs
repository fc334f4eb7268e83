//! `pruneforge merge --models A B [--t 0.5 | --t 0,0.5,1] [--method slerp|linear] --out DIR`.

use anyhow::Context;
use pruneforge::stages::merge::{self, FilteredT, MergeMethod, MergeParams, TValue};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Models to merge (HF directories or .gguf files); the first is t = 0 unless --base says
    /// otherwise.
    #[arg(long, num_args = 1.., required = true)]
    pub models: Vec<PathBuf>,
    /// The t = 0 model and source of config and tokenizer (mergekit base_model); added to the
    /// inputs when it is not among --models.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// slerp (exactly 2 models) or linear.
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
    /// Linear: one weight per model, base first (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// Linear with weights: do not divide by the sum of the weights.
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
    let params = MergeParams {
        method: match args.method {
            MethodArg::Slerp => MergeMethod::Slerp,
            MethodArg::Linear => MergeMethod::Linear,
        },
        t,
        weights: args.weights,
        normalize: !args.no_normalize,
    };
    let summary = merge::run(&args.models, args.base.as_deref(), &params, &args.out)
        .with_context(|| format!("merging into {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
