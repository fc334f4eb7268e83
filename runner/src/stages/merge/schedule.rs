//! The interpolation factor `t` of each tensor, resolved the way mergekit resolves a merge
//! parameter:
//!
//! - A tensor's position `x ∈ [0, 1]` (`mergekit/plan.py`, `MergePlanner._plan` and
//!   `plan_slice`): layer `i` of `n` sits at `i / (n - 1)` (`1` when `n == 1`); the tensors
//!   before the layers (`model.embed_tokens`) at `0`; those after them (`model.norm`,
//!   `lm_head`) at `1`.
//! - A value (`mergekit/config.py`, `evaluate_setting`) is a scalar (used as is), a gradient
//!   (a list of anchors spread evenly over `[0, 1]`: `scaled = x·(len - 1)`,
//!   `i0 = int(scaled)`, `i1 = min(len - 1, i0 + 1)`, `frac = scaled - i0`,
//!   value `(1 - frac)·v[i0] + frac·v[i1]`), or a list of filtered values: the first entry
//!   whose `filter` is absent, `*`, or a substring of the tensor name applies.

use serde::{Deserialize, Serialize};

/// `t`: a number, a gradient over the layers, or filtered values, as in mergekit's
/// `parameters: t:` (e.g. `[{filter: self_attn, value: [0, 0.5, 1]}, {filter: mlp, value:
/// [1, 0.5, 0]}, {value: 0.5}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TValue {
    Scalar(f64),
    List(Vec<f64>),
    Filtered(Vec<FilteredT>),
}

impl Default for TValue {
    fn default() -> Self {
        Self::Scalar(0.5)
    }
}

/// One entry of a filtered `t`: applies to tensors whose name contains `filter` (every tensor
/// when `filter` is absent or `*`). `value` is a scalar or a gradient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilteredT {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub value: TValue,
}

impl FilteredT {
    fn matches(&self, tensor: &str) -> bool {
        match self.filter.as_deref() {
            None | Some("*") => true,
            Some(f) => tensor.contains(f),
        }
    }
}

/// Where a tensor sits, which fixes where a gradient is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorPosition {
    /// Before the decoder layers: `model.embed_tokens.*` (mergekit `pre_weights`).
    Embedding,
    /// In decoder layer `i`: `model.layers.{i}.*`.
    Layer(usize),
    /// After the decoder layers: `model.norm.*`, `lm_head.*` and anything else
    /// (mergekit `post_weights`).
    Final,
}

impl TensorPosition {
    /// The position of an HF Llama-family tensor name; `Err` names a malformed layer index.
    pub fn of(name: &str) -> Result<Self, String> {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            let index = rest.split('.').next().unwrap_or_default();
            return index
                .parse()
                .map(Self::Layer)
                .map_err(|_| format!("tensor `{name}`: cannot read a layer index from `{index}`"));
        }
        if name.starts_with("model.embed_tokens.") {
            return Ok(Self::Embedding);
        }
        Ok(Self::Final)
    }

    /// mergekit's `t` coordinate of this position in a model of `num_layers` layers.
    pub fn fraction(self, num_layers: usize) -> f64 {
        match self {
            Self::Embedding => 0.0,
            Self::Final => 1.0,
            Self::Layer(i) if num_layers > 1 => i as f64 / (num_layers - 1) as f64,
            Self::Layer(_) => 1.0,
        }
    }
}

/// mergekit's gradient sampling at `x ∈ [0, 1]` (non-empty `anchors`).
pub fn sample_gradient(anchors: &[f64], x: f64) -> f64 {
    let last = anchors.len() - 1;
    let scaled = x * last as f64;
    // Python's int() truncates toward zero; `scaled` is never negative here.
    let i0 = (scaled as usize).min(last);
    let i1 = (i0 + 1).min(last);
    let frac = scaled - i0 as f64;
    (1.0 - frac) * anchors[i0] + frac * anchors[i1]
}

impl TValue {
    /// Checks that every number is finite, lists are non-empty and filters are not nested.
    pub fn validate(&self) -> Result<(), String> {
        let check = |v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("t must be finite, got {v}"))
            }
        };
        match self {
            Self::Scalar(v) => check(*v),
            Self::List(l) if l.is_empty() => {
                Err("t is an empty list: give a number or at least one gradient anchor".into())
            }
            Self::List(l) => l.iter().try_for_each(|v| check(*v)),
            Self::Filtered(conds) if conds.is_empty() => {
                Err("t is an empty list of filtered values".into())
            }
            Self::Filtered(conds) => conds.iter().try_for_each(|c| match &c.value {
                Self::Filtered(_) => Err(format!(
                    "t: the value for filter {:?} must be a number or a list of numbers, not filtered values",
                    c.filter.as_deref().unwrap_or("*")
                )),
                v => v.validate(),
            }),
        }
    }

    /// The value for `tensor` at gradient coordinate `x`; `None` when no filter matches.
    pub fn resolve(&self, tensor: &str, x: f64) -> Option<f64> {
        match self {
            Self::Scalar(v) => Some(*v),
            Self::List(l) => Some(sample_gradient(l, x)),
            Self::Filtered(conds) => conds
                .iter()
                .find(|c| c.matches(tensor))
                .and_then(|c| c.value.resolve(tensor, x)),
        }
    }

    /// The value for `tensor` (an HF name) in a model of `num_layers` layers.
    pub fn for_tensor(&self, tensor: &str, num_layers: usize) -> Result<f64, String> {
        let x = TensorPosition::of(tensor)?.fraction(num_layers);
        self.resolve(tensor, x).ok_or_else(|| {
            format!(
                "t has no value for tensor `{tensor}`: no filter matches it; add an entry \
                 without `filter` as the catch-all"
            )
        })
    }

    /// The values per position, one row per filter (a single row without filter for a
    /// scalar or a gradient), for the report.
    pub fn resolved(&self, num_layers: usize) -> Vec<ResolvedT> {
        let row = |filter: Option<String>, v: &TValue| {
            let at = |p: TensorPosition| v.resolve("", p.fraction(num_layers)).unwrap_or(f64::NAN);
            ResolvedT {
                filter,
                embedding: at(TensorPosition::Embedding),
                layers: (0..num_layers)
                    .map(|i| at(TensorPosition::Layer(i)))
                    .collect(),
                final_: at(TensorPosition::Final),
            }
        };
        match self {
            Self::Filtered(conds) => conds
                .iter()
                .map(|c| row(c.filter.clone(), &c.value))
                .collect(),
            v => vec![row(None, v)],
        }
    }
}

/// The values one entry of `t` gives at each position. With filters, an entry applies only to
/// the tensors whose name contains its filter and that no earlier entry matched (the per-tensor
/// values are in `merge.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedT {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `model.embed_tokens`.
    pub embedding: f64,
    /// Decoder layers 0..n.
    pub layers: Vec<f64>,
    /// `model.norm`, `lm_head`.
    #[serde(rename = "final")]
    pub final_: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(
            TensorPosition::of("model.layers.12.mlp.up_proj.weight"),
            Ok(TensorPosition::Layer(12))
        );
        assert_eq!(
            TensorPosition::of("model.embed_tokens.weight"),
            Ok(TensorPosition::Embedding)
        );
        assert_eq!(
            TensorPosition::of("model.norm.weight"),
            Ok(TensorPosition::Final)
        );
        assert_eq!(
            TensorPosition::of("lm_head.weight"),
            Ok(TensorPosition::Final)
        );
        assert!(TensorPosition::of("model.layers.x.mlp.weight").is_err());
        assert_eq!(TensorPosition::Layer(0).fraction(5), 0.0);
        assert_eq!(TensorPosition::Layer(3).fraction(5), 0.75);
        assert_eq!(TensorPosition::Layer(0).fraction(1), 1.0);
    }

    // mergekit: t: [0, 1, 0.2] over 5 layers: x = 0, .25, .5, .75, 1 → scaled = 0, .5, 1, 1.5,
    // 2 → 0, 0.5, 1, 0.6, 0.2; embeddings sample x = 0 (0), final norm / lm_head x = 1 (0.2).
    #[test]
    fn gradient_over_layers() {
        let t = TValue::List(vec![0.0, 1.0, 0.2]);
        let r = t.resolved(5);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].embedding, 0.0);
        assert_eq!(r[0].final_, 0.2);
        let want = [0.0, 0.5, 1.0, 0.6, 0.2];
        for (got, want) in r[0].layers.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{:?}", r[0].layers);
        }
        assert_eq!(sample_gradient(&[0.7], 0.3), 0.7);
    }

    #[test]
    fn filters_first_match_wins() {
        let t: TValue = serde_json::from_str(
            r#"[{"filter":"self_attn","value":[0,1]},{"filter":"mlp","value":1},{"value":0.5}]"#,
        )
        .unwrap();
        assert_eq!(t.validate(), Ok(()));
        let f = |n: &str| t.for_tensor(n, 3).unwrap();
        assert_eq!(f("model.layers.0.self_attn.q_proj.weight"), 0.0);
        assert_eq!(f("model.layers.1.self_attn.o_proj.weight"), 0.5);
        assert_eq!(f("model.layers.1.mlp.down_proj.weight"), 1.0);
        assert_eq!(f("model.layers.2.input_layernorm.weight"), 0.5);
        assert_eq!(f("model.embed_tokens.weight"), 0.5);
        let no_catch_all: TValue = serde_json::from_str(r#"[{"filter":"mlp","value":1}]"#).unwrap();
        let e = no_catch_all.for_tensor("model.norm.weight", 3).unwrap_err();
        assert!(
            e.contains("model.norm.weight") && e.contains("catch-all"),
            "{e}"
        );
    }

    #[test]
    fn parse_and_validate() {
        assert_eq!(
            serde_json::from_str::<TValue>("0.3").unwrap(),
            TValue::Scalar(0.3)
        );
        assert_eq!(
            serde_json::from_str::<TValue>("[0, 1]").unwrap(),
            TValue::List(vec![0.0, 1.0])
        );
        assert!(TValue::List(vec![]).validate().is_err());
        assert!(TValue::Scalar(f64::NAN).validate().is_err());
        let nested: TValue =
            serde_json::from_str(r#"[{"filter":"mlp","value":[{"value":1}]}]"#).unwrap();
        assert!(nested.validate().unwrap_err().contains("mlp"));
    }
}
