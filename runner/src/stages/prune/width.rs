//! Width pruning (Minitron): keep the most important MLP neurons, KV groups (with all or the
//! most important of their query heads, so GQA stays valid) and embedding channels, by the
//! activation importance of `score` ([`crate::stages::score::width`]).
//!
//! Kept channels stay in their original order. Every layer keeps the same counts (an HF
//! config has one `intermediate_size` and one head count), each chosen by its own layer's
//! scores; embedding channels are chosen once for the whole model.

use crate::model::{Llama, ModelConfig};
use crate::stages::score::WidthImportance;
use crate::stages::{Result, StageError};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub use pruneforge_api::spec::{WidthSize, WidthTargets};

/// What width pruning kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidthShapeChange {
    pub hidden_size: [usize; 2],
    pub intermediate_size: [usize; 2],
    pub num_attention_heads: [usize; 2],
    pub num_key_value_heads: [usize; 2],
}

impl WidthShapeChange {
    /// The dimensions that changed, e.g. `intermediate 1536->1128, kv heads 3->2`.
    pub fn describe(&self) -> String {
        let dims = [
            ("hidden", self.hidden_size),
            ("intermediate", self.intermediate_size),
            ("heads", self.num_attention_heads),
            ("kv heads", self.num_key_value_heads),
        ];
        let changed: Vec<String> = dims
            .iter()
            .filter(|(_, [a, b])| a != b)
            .map(|(name, [a, b])| format!("{name} {a}->{b}"))
            .collect();
        if changed.is_empty() {
            "unchanged".into()
        } else {
            changed.join(", ")
        }
    }
}

/// The indices of the `k` largest scores, in increasing index order (ties → lower index).
pub fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order.sort_unstable();
    order
}

/// The kept indices of one layer.
struct LayerKeep {
    neurons: Vec<usize>,
    /// Query heads, group by group.
    heads: Vec<usize>,
    groups: Vec<usize>,
}

fn rows_of(units: &[usize], width: usize) -> Vec<usize> {
    units
        .iter()
        .flat_map(|&u| u * width..(u + 1) * width)
        .collect()
}

fn select(t: &Tensor, dim: usize, idx: &[usize]) -> Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.to_device(t.device())?;
    Ok(t.index_select(&ids, dim)?.contiguous()?)
}

/// What [`prune_width`] did.
#[derive(Debug, Clone)]
pub struct WidthPruned {
    pub change: WidthShapeChange,
    /// The source embedding channels kept, ascending.
    pub kept_hidden: Vec<usize>,
}

/// Prunes `model` in place to `targets` by `importance` (computed on this model: same layer
/// count and widths). Returns the change of shape and the kept embedding channels.
pub fn prune_width(
    model: &mut Llama,
    importance: &WidthImportance,
    targets: &WidthTargets,
) -> Result<WidthPruned> {
    let c = model.config.clone();
    check_fits(&c, importance)?;
    let per_group = c.num_kv_groups();
    let size = |s: &Option<WidthSize>, what: &str, original: usize| -> Result<usize> {
        match s {
            Some(s) => s.resolve(what, original).map_err(StageError::Input),
            None => Ok(original),
        }
    };
    let hidden = size(&targets.hidden_size, "hiddenSize", c.hidden_size)?;
    let inter = size(
        &targets.intermediate_size,
        "intermediateSize",
        c.intermediate_size,
    )?;
    let groups = size(
        &targets.num_key_value_heads,
        "numKeyValueHeads",
        c.num_key_value_heads,
    )?;
    let heads_per_group = size(&targets.heads_per_group, "headsPerGroup", per_group)?;
    let keep_hidden = top_k(&importance.hidden, hidden);
    let keeps: Vec<LayerKeep> = importance
        .layers
        .iter()
        .map(|l| {
            let kept_groups = top_k(&l.groups, groups);
            let heads = kept_groups
                .iter()
                .flat_map(|&g| {
                    let in_group = &l.heads[g * per_group..(g + 1) * per_group];
                    top_k(in_group, heads_per_group)
                        .into_iter()
                        .map(move |h| g * per_group + h)
                })
                .collect();
            LayerKeep {
                neurons: top_k(&l.mlp, inter),
                heads,
                groups: kept_groups,
            }
        })
        .collect();
    let d = c.head_dim;
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in model.named_weights()? {
        let t = slice_weight(&name, &t, &keeps, &keep_hidden, d)?;
        weights.insert(name, t);
    }
    let mut config = c.clone();
    config.hidden_size = hidden;
    config.intermediate_size = inter;
    config.num_key_value_heads = groups;
    config.num_attention_heads = groups * heads_per_group;
    let device = model.device().clone();
    let mut pruned = Llama::load(config, &mut weights, &device)?;
    pruned.train_kernels = model.train_kernels;
    pruned.fused_kernels = model.fused_kernels;
    *model = pruned;
    Ok(WidthPruned {
        change: WidthShapeChange {
            hidden_size: [c.hidden_size, hidden],
            intermediate_size: [c.intermediate_size, inter],
            num_attention_heads: [c.num_attention_heads, groups * heads_per_group],
            num_key_value_heads: [c.num_key_value_heads, groups],
        },
        kept_hidden: keep_hidden,
    })
}

fn check_fits(c: &ModelConfig, w: &WidthImportance) -> Result<()> {
    let mismatch = |what: String| {
        StageError::Input(format!(
            "the width importance does not fit this model ({what}); re-run `score` with width importance on this model"
        ))
    };
    if w.layers.len() != c.num_hidden_layers {
        return Err(mismatch(format!(
            "{} layers scored, the model has {}",
            w.layers.len(),
            c.num_hidden_layers
        )));
    }
    if w.hidden.len() != c.hidden_size {
        return Err(mismatch(format!(
            "{} embedding channels scored, hidden_size is {}",
            w.hidden.len(),
            c.hidden_size
        )));
    }
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
    if !finite(&w.hidden) || !w.layers.iter().all(|l| finite(&l.mlp) && finite(&l.heads)) {
        return Err(StageError::Input(
            "the width importance holds non-finite scores (the calibration pass overflowed); re-run `score` in f32".into(),
        ));
    }
    for (i, l) in w.layers.iter().enumerate() {
        if l.mlp.len() != c.intermediate_size
            || l.heads.len() != c.num_attention_heads
            || l.groups.len() != c.num_key_value_heads
        {
            return Err(mismatch(format!(
                "layer {i} has {} neurons, {} heads, {} groups scored",
                l.mlp.len(),
                l.heads.len(),
                l.groups.len()
            )));
        }
    }
    Ok(())
}

/// Slices one HF-named weight to the kept channels.
fn slice_weight(
    name: &str,
    t: &Tensor,
    keeps: &[LayerKeep],
    hidden: &[usize],
    head_dim: usize,
) -> Result<Tensor> {
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return match name {
            "model.embed_tokens.weight" | "lm_head.weight" => select(t, 1, hidden),
            "model.norm.weight" => select(t, 0, hidden),
            other => Err(StageError::Input(format!(
                "width pruning does not know the weight `{other}`"
            ))),
        };
    };
    let (layer, param) = rest.split_once('.').unwrap_or((rest, ""));
    let keep = layer
        .parse::<usize>()
        .ok()
        .and_then(|l| keeps.get(l))
        .ok_or_else(|| StageError::Input(format!("weight `{name}` of an unknown layer")))?;
    let q_rows = || rows_of(&keep.heads, head_dim);
    let kv_rows = || rows_of(&keep.groups, head_dim);
    match param {
        "input_layernorm.weight" | "post_attention_layernorm.weight" => select(t, 0, hidden),
        "self_attn.q_proj.weight" => select(&select(t, 0, &q_rows())?, 1, hidden),
        "self_attn.q_proj.bias" => select(t, 0, &q_rows()),
        "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
            select(&select(t, 0, &kv_rows())?, 1, hidden)
        }
        "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => select(t, 0, &kv_rows()),
        "self_attn.o_proj.weight" => select(&select(t, 0, hidden)?, 1, &q_rows()),
        "self_attn.o_proj.bias" | "mlp.down_proj.bias" => select(t, 0, hidden),
        "mlp.gate_proj.weight" | "mlp.up_proj.weight" => {
            select(&select(t, 0, &keep.neurons)?, 1, hidden)
        }
        "mlp.gate_proj.bias" | "mlp.up_proj.bias" => select(t, 0, &keep.neurons),
        "mlp.down_proj.weight" => select(&select(t, 0, hidden)?, 1, &keep.neurons),
        other => Err(StageError::Input(format!(
            "width pruning does not know the layer weight `{other}` ({name})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_in_index_order() {
        assert_eq!(top_k(&[0.5, 3.0, 1.0, 3.0, 0.1], 3), vec![1, 2, 3]);
        // Ties go to the lower index.
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }
}
