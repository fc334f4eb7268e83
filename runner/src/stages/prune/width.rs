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

/// A target size: an absolute count, or a percentage of the original as a string (`"75%"`,
/// like Kubernetes' IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Count(usize),
    Percent(String),
}

impl Size {
    /// The count for a dimension of `original`: a percentage rounds to the nearest count
    /// (at least 1).
    pub fn resolve(&self, what: &str, original: usize) -> Result<usize> {
        let n = match self {
            Size::Count(n) => *n,
            Size::Percent(p) => {
                let v = p
                    .trim()
                    .strip_suffix('%')
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v > 0.0 && *v <= 100.0)
                    .ok_or_else(|| {
                        StageError::Input(format!(
                            "{what}: `{p}` is neither a count nor a percentage in (0%, 100%] such as \"75%\""
                        ))
                    })?;
                ((original as f64 * v / 100.0).round() as usize).max(1)
            }
        };
        if n == 0 || n > original {
            return Err(StageError::Input(format!(
                "{what}: {n} is not possible, the model has {original} (give 1..={original})"
            )));
        }
        Ok(n)
    }
}

/// The width to prune to; an absent field keeps that dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidthTargets {
    /// MLP neurons per layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<Size>,
    /// KV groups per layer (`num_key_value_heads`); each keeps its query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<Size>,
    /// Query heads kept in every KV group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads_per_group: Option<Size>,
    /// Embedding channels (`hidden_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<Size>,
}

impl WidthTargets {
    pub fn is_empty(&self) -> bool {
        self.intermediate_size.is_none()
            && self.num_key_value_heads.is_none()
            && self.heads_per_group.is_none()
            && self.hidden_size.is_none()
    }
}

/// What width pruning kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidthShapeChange {
    pub hidden_size: [usize; 2],
    pub intermediate_size: [usize; 2],
    pub num_attention_heads: [usize; 2],
    pub num_key_value_heads: [usize; 2],
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

/// Prunes `model` in place to `targets` by `importance` (computed on this model: same layer
/// count and widths). Returns the change of shape.
pub fn prune_width(
    model: &mut Llama,
    importance: &WidthImportance,
    targets: &WidthTargets,
) -> Result<WidthShapeChange> {
    let c = model.config.clone();
    check_fits(&c, importance)?;
    let per_group = c.num_kv_groups();
    let hidden = match &targets.hidden_size {
        Some(s) => s.resolve("hidden_size", c.hidden_size)?,
        None => c.hidden_size,
    };
    let inter = match &targets.intermediate_size {
        Some(s) => s.resolve("intermediate_size", c.intermediate_size)?,
        None => c.intermediate_size,
    };
    let groups = match &targets.num_key_value_heads {
        Some(s) => s.resolve("num_key_value_heads", c.num_key_value_heads)?,
        None => c.num_key_value_heads,
    };
    let heads_per_group = match &targets.heads_per_group {
        Some(s) => s.resolve("heads_per_group", per_group)?,
        None => per_group,
    };
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
    Ok(WidthShapeChange {
        hidden_size: [c.hidden_size, hidden],
        intermediate_size: [c.intermediate_size, inter],
        num_attention_heads: [c.num_attention_heads, groups * heads_per_group],
        num_key_value_heads: [c.num_key_value_heads, groups],
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

    #[test]
    fn sizes_resolve_and_bad_ones_say_what_to_fix() {
        assert_eq!(Size::Count(6).resolve("x", 8).unwrap(), 6);
        assert_eq!(
            Size::Percent("75%".into()).resolve("x", 1536).unwrap(),
            1152
        );
        assert_eq!(Size::Percent(" 50 %".into()).resolve("x", 3).unwrap(), 2);
        for bad in [
            Size::Count(0),
            Size::Count(9),
            Size::Percent("0%".into()),
            Size::Percent("120%".into()),
            Size::Percent("0.75".into()),
        ] {
            let e = bad.resolve("intermediate_size", 8).unwrap_err().to_string();
            assert!(e.contains("intermediate_size"), "{e}");
        }
        let t: WidthTargets =
            serde_json::from_str(r#"{"intermediate_size": "75%", "num_key_value_heads": 2}"#)
                .unwrap();
        assert_eq!(t.intermediate_size, Some(Size::Percent("75%".into())));
        assert_eq!(t.num_key_value_heads, Some(Size::Count(2)));
        assert!(serde_json::from_str::<WidthTargets>(r#"{"heads": 2}"#).is_err());
    }
}
