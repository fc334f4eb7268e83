//! Width pruning (Minitron): the target sizes of a width-pruned variant and how activation
//! importance is aggregated. The runner uses these types as they are.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A target size: a count, or a percentage of the original as a string (`"75%"`), like
/// Kubernetes' IntOrString.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WidthSize {
    Count(u32),
    Percent(String),
}

impl fmt::Display for WidthSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WidthSize::Count(n) => write!(f, "{n}"),
            WidthSize::Percent(p) => f.write_str(p),
        }
    }
}

impl std::str::FromStr for WidthSize {
    type Err = String;

    /// `1152` or `75%`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let size = if t.ends_with('%') {
            WidthSize::Percent(t.to_string())
        } else {
            WidthSize::Count(t.parse().map_err(|_| {
                format!("`{s}` is neither a count nor a percentage such as \"75%\"")
            })?)
        };
        size.check()?;
        Ok(size)
    }
}

impl WidthSize {
    /// The percentage in (0, 100], or why the string is not one.
    fn percent(p: &str) -> Result<f64, String> {
        p.trim()
            .strip_suffix('%')
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0 && *v <= 100.0)
            .ok_or_else(|| {
                format!("`{p}` is neither a count nor a percentage in (0%, 100%] such as \"75%\"")
            })
    }

    /// Whether the size is well formed (a count of at least 1, or a valid percentage).
    pub fn check(&self) -> Result<(), String> {
        match self {
            WidthSize::Count(0) => Err("a count must be at least 1".into()),
            WidthSize::Count(_) => Ok(()),
            WidthSize::Percent(p) => Self::percent(p).map(|_| ()),
        }
    }

    /// The count for a dimension of `original`: a percentage rounds to the nearest count (at
    /// least 1). `what` names the dimension in the error.
    pub fn resolve(&self, what: &str, original: usize) -> Result<usize, String> {
        let n = match self {
            WidthSize::Count(n) => *n as usize,
            WidthSize::Percent(p) => {
                let v = Self::percent(p).map_err(|e| format!("{what}: {e}"))?;
                ((original as f64 * v / 100.0).round() as usize).max(1)
            }
        };
        if n == 0 || n > original {
            return Err(format!(
                "{what}: {n} is not possible, the model has {original} (give 1..={original})"
            ));
        }
        Ok(n)
    }
}

impl JsonSchema for WidthSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WidthSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "A count (at least 1), or a percentage of the original size such as \"75%\"."
        })
    }
}

/// The widths to prune to; an absent field keeps that dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WidthTargets {
    /// MLP neurons kept per layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<WidthSize>,
    /// KV groups kept per layer (`num_key_value_heads`); each keeps its query heads, so GQA
    /// stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<WidthSize>,
    /// Query heads kept in every KV group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads_per_group: Option<WidthSize>,
    /// Embedding channels kept (`hidden_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<WidthSize>,
}

impl WidthTargets {
    /// Whether no dimension is pruned.
    pub fn is_empty(&self) -> bool {
        self.sizes().all(|(_, s)| s.is_none())
    }

    /// Every dimension with its manifest name.
    pub fn sizes(&self) -> impl Iterator<Item = (&'static str, Option<&WidthSize>)> {
        [
            ("intermediateSize", self.intermediate_size.as_ref()),
            ("numKeyValueHeads", self.num_key_value_heads.as_ref()),
            ("headsPerGroup", self.heads_per_group.as_ref()),
            ("hiddenSize", self.hidden_size.as_ref()),
        ]
        .into_iter()
    }

    /// Whether every given size is well formed.
    pub fn check(&self) -> Result<(), String> {
        for (name, size) in self.sizes() {
            if let Some(s) = size {
                s.check().map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// One width-pruned variant of the grid: a name, the widths, and optionally a block of layers
/// removed as well (depth and width combined).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidthVariant {
    /// Names the variant (`w-<name>`, or `n<blockSize>-w-<name>` when combined): lowercase
    /// letters, digits and `-`, at most 20 characters.
    pub name: String,
    /// Also remove the best-scored block of this many layers (after width pruning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub block_size: Option<u32>,
    /// The target widths.
    #[serde(flatten)]
    pub targets: WidthTargets,
}

/// How `|activation|` is aggregated into one score per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// Arithmetic mean.
    Mean,
    /// Square root of the sum of squares.
    L2,
}

impl Reduce {
    pub fn as_str(self) -> &'static str {
        match self {
            Reduce::Mean => "mean",
            Reduce::L2 => "l2",
        }
    }
}

impl std::str::FromStr for Reduce {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mean" => Ok(Reduce::Mean),
            "l2" => Ok(Reduce::L2),
            other => Err(format!("unknown aggregation `{other}` (valid: mean, l2)")),
        }
    }
}

/// The aggregation of activation importance: over a sequence's tokens, then over sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WidthAggregation {
    /// Over the real tokens of a sequence (default `mean`).
    #[serde(default = "default_sequence")]
    pub sequence: Reduce,
    /// Over sequences (default `l2`).
    #[serde(default = "default_batch")]
    pub batch: Reduce,
}

fn default_sequence() -> Reduce {
    Reduce::Mean
}

fn default_batch() -> Reduce {
    Reduce::L2
}

impl Default for WidthAggregation {
    /// NVIDIA ModelOpt's: mean over the sequence, L2 over the batch.
    fn default() -> Self {
        Self {
            sequence: default_sequence(),
            batch: default_batch(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_resolve_and_say_what_to_fix() {
        assert_eq!("1152".parse::<WidthSize>(), Ok(WidthSize::Count(1152)));
        assert_eq!(
            "75%".parse::<WidthSize>(),
            Ok(WidthSize::Percent("75%".into()))
        );
        assert!("0".parse::<WidthSize>().is_err());
        assert!("0.75".parse::<WidthSize>().is_err());
        assert!("120%".parse::<WidthSize>().is_err());
        assert_eq!(WidthSize::Count(6).resolve("x", 8), Ok(6));
        assert_eq!(
            WidthSize::Percent("75%".into()).resolve("x", 1536),
            Ok(1152)
        );
        assert_eq!(WidthSize::Percent(" 50 %".into()).resolve("x", 3), Ok(2));
        for bad in [
            WidthSize::Count(0),
            WidthSize::Count(9),
            WidthSize::Percent("0%".into()),
            WidthSize::Percent("0.75".into()),
        ] {
            let e = bad.resolve("intermediateSize", 8).unwrap_err();
            assert!(e.contains("intermediateSize"), "{e}");
        }
    }

    #[test]
    fn a_variant_reads_flat_from_yaml() {
        let v: WidthVariant = serde_yaml::from_str(
            "name: mix\nblockSize: 3\nintermediateSize: \"75%\"\nnumKeyValueHeads: 2\n",
        )
        .unwrap();
        assert_eq!(v.block_size, Some(3));
        assert_eq!(
            v.targets.intermediate_size,
            Some(WidthSize::Percent("75%".into()))
        );
        assert_eq!(v.targets.num_key_value_heads, Some(WidthSize::Count(2)));
        assert!(v.targets.check().is_ok() && !v.targets.is_empty());
        let agg: WidthAggregation = serde_json::from_str("{}").unwrap();
        assert_eq!(agg, WidthAggregation::default());
    }
}
