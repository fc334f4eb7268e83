//! Stage ids.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::RecoveryMethod;

/// Which pruned model a variant derives from: a block of `block_size` layers removed (0: none),
/// a named width variant (`spec.pruning.widths`), or both. Its label names the variant: `n6`,
/// `w-mlp75`, `n3-w-mix`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shape {
    pub block_size: u32,
    pub width: Option<String>,
}

impl Shape {
    /// Depth pruning only: `n<n>`.
    pub fn depth(block_size: u32) -> Self {
        Shape {
            block_size,
            width: None,
        }
    }

    /// The label: `n<n>`, `w-<name>` or `n<n>-w-<name>`.
    pub fn label(&self) -> String {
        match (self.block_size, &self.width) {
            (n, None) => format!("n{n}"),
            (0, Some(w)) => format!("w-{w}"),
            (n, Some(w)) => format!("n{n}-w-{w}"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Stable id of a stage instance within a plan, e.g. `import`, `score`, `prune-n6`,
/// `distill-gsm8k`, `finetune-n6-self-distill`, `merge-n6`, `eval-base`, `eval-n6`,
/// `eval-n6-sft`, `eval-n6-merged`, `speculate-n6`; width variants put their shape label where
/// `n6` stands (`prune-w-mlp75`). Ids are lowercase DNS labels, so they can be part of
/// Kubernetes object names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageId(String);

impl StageId {
    /// `import`.
    pub fn import() -> Self {
        StageId("import".into())
    }

    /// `score`.
    pub fn score() -> Self {
        StageId("score".into())
    }

    /// `prune-<shape>`.
    pub fn prune(shape: &Shape) -> Self {
        StageId(format!("prune-{shape}"))
    }

    /// `distill-<dataset name>`.
    pub fn distill(dataset: &str) -> Self {
        StageId(format!("distill-{dataset}"))
    }

    /// `finetune-<shape>-<method slug>`.
    pub fn finetune(shape: &Shape, method: RecoveryMethod) -> Self {
        StageId(format!("finetune-{}", variant::finetuned(shape, method)))
    }

    /// `finetune-<shape>-<method slug>-on-<dataset>`: a method trained on one data set only
    /// (for `merge.across: datasets`).
    pub fn finetune_on(shape: &Shape, method: RecoveryMethod, dataset: &str) -> Self {
        StageId(format!(
            "finetune-{}",
            variant::finetuned_on(shape, method, dataset)
        ))
    }

    /// `finetune-<shape>-sft-seed<seed>`: the noise-floor control of the `sft` arm.
    pub fn finetune_control(shape: &Shape, seed: u32) -> Self {
        StageId(format!("finetune-{}", variant::control(shape, seed)))
    }

    /// `prefer-<shape>-<method slug>-<dpo|spin<k>>`: a preference stage after a fine-tune.
    pub fn prefer(shape: &Shape, method: RecoveryMethod, suffix: &str) -> Self {
        StageId(format!(
            "prefer-{}",
            variant::preferred(shape, method, suffix)
        ))
    }

    /// `self-play-<shape>-<method slug>-spin<k>`: SPIN iteration k's generation.
    pub fn self_play(shape: &Shape, method: RecoveryMethod, suffix: &str) -> Self {
        StageId(format!(
            "self-play-{}",
            variant::preferred(shape, method, suffix)
        ))
    }

    /// `finetune-teacher`: teacher correction of the unpruned model.
    pub fn teacher_correction() -> Self {
        StageId(format!("finetune-{}", variant::TEACHER))
    }

    /// `merge-<shape>`.
    pub fn merge(shape: &Shape) -> Self {
        StageId(format!("merge-{shape}"))
    }

    /// `eval-<variant>`, e.g. `eval-base`, `eval-n6`, `eval-n6-sft`, `eval-n6-merged`.
    pub fn eval(variant: &str) -> Self {
        StageId(format!("eval-{variant}"))
    }

    /// `speculate-<shape>`.
    pub fn speculate(shape: &Shape) -> Self {
        StageId(format!("speculate-{shape}"))
    }

    /// `speculate-int8`: the base model drafting for itself in 8 bits.
    pub fn speculate_int8() -> Self {
        StageId(format!("speculate-{}", variant::INT8_DRAFT))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StageId {
    fn from(s: &str) -> Self {
        StageId(s.to_string())
    }
}

impl AsRef<str> for StageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Variant names used in eval stage ids and in the status.
pub mod variant {
    use super::Shape;
    use crate::spec::RecoveryMethod;

    /// The unpruned model.
    pub const BASE: &str = "base";

    /// The unpruned model after teacher correction.
    pub const TEACHER: &str = "teacher";

    /// The unpruned model decoding in 8 bits, as a speculative draft for itself.
    pub const INT8_DRAFT: &str = "int8";

    /// The pruned model without recovery: `n6`, `w-mlp75`.
    pub fn pruned(shape: &Shape) -> String {
        shape.label()
    }

    /// A fine-tuned model: `n6-self-distill`.
    pub fn finetuned(shape: &Shape, method: RecoveryMethod) -> String {
        format!("{shape}-{}", method.slug())
    }

    /// A method fine-tuned on one data set only: `n6-self-distill-on-alpaca`.
    pub fn finetuned_on(shape: &Shape, method: RecoveryMethod, dataset: &str) -> String {
        format!("{shape}-{}-on-{dataset}", method.slug())
    }

    /// The `sft` arm trained again with another seed (the noise-floor control): `n6-sft-seed7`.
    pub fn control(shape: &Shape, seed: u32) -> String {
        format!("{shape}-sft-seed{seed}")
    }

    /// A fine-tuned model after a preference stage: `n6-sft-dpo`, `n6-self-distill-spin2`.
    pub fn preferred(shape: &Shape, method: RecoveryMethod, suffix: &str) -> String {
        format!("{shape}-{}-{suffix}", method.slug())
    }

    /// Whether `suffix` names a preference stage: `dpo` or `spin<k>`.
    pub fn is_preference(suffix: &str) -> bool {
        suffix == "dpo"
            || suffix
                .strip_prefix("spin")
                .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The fine-tune a preferred variant's recovery part continues, and the preference part:
    /// `sft-dpo` → (`sft`, `dpo`); `None` for other recovery parts.
    pub fn split_preference(method: &str) -> Option<(&str, &str)> {
        let (base, suffix) = method.rsplit_once('-')?;
        (is_preference(suffix) && is_trained(base)).then_some((base, suffix))
    }

    /// Whether `slug` names a trained recovery method.
    fn is_trained(slug: &str) -> bool {
        RecoveryMethod::ALL
            .iter()
            .any(|m| *m != RecoveryMethod::None && m.slug() == slug)
    }

    /// A merged model: `n6-merged`.
    pub fn merged(shape: &Shape) -> String {
        format!("{shape}-merged")
    }

    /// Whether `label` reads as a shape label: `n<n>`, `w-<name>` or `n<n>-w-<name>`.
    pub fn is_shape_label(label: &str) -> bool {
        let depth = |s: &str| {
            s.strip_prefix('n')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        };
        let width = |s: &str| s.strip_prefix("w-").is_some_and(|w| !w.is_empty());
        match label.split_once('-') {
            None => depth(label),
            Some((first, rest)) if depth(first) => width(rest),
            Some(_) => width(label),
        }
    }

    /// Whether a variant's recovery part names a noise-floor control (`sft-seed7`).
    pub fn is_control(method: &str) -> bool {
        method
            .strip_prefix("sft-seed")
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The recovery part of a variant name (`sft`, `self-distill-logit-kd`, `merged`,
    /// `sft-seed7`, `sft-dpo`, `self-distill-spin2`) when `suffix` is one.
    fn is_method(suffix: &str) -> bool {
        suffix == "merged"
            || is_control(suffix)
            || is_trained(suffix)
            || split_preference(suffix).is_some()
            || split_dataset(suffix).is_some()
    }

    /// A per-data-set recovery part read back: `self-distill-on-alpaca` → (`self-distill`,
    /// `alpaca`); `None` for other recovery parts.
    pub fn split_dataset(method: &str) -> Option<(&str, &str)> {
        let (base, dataset) = method.split_once("-on-")?;
        (is_trained(base) && !dataset.is_empty()).then_some((base, dataset))
    }

    /// A variant name read back: its shape label and its recovery part ("" for the pruned
    /// model itself); `None` for `base`, `teacher` and names no plan gives. The inverse of
    /// [`pruned`], [`finetuned`], [`finetuned_on`], [`control`], [`preferred`] and [`merged`];
    /// the planner refuses width names
    /// that would make it ambiguous.
    pub fn split(name: &str) -> Option<(&str, &str)> {
        // The shortest shape prefix followed by a recovery part; width names never end in
        // one (the planner checks), so at most one split fits.
        let recovered = name.match_indices('-').find_map(|(at, _)| {
            let (shape, method) = (&name[..at], &name[at + 1..]);
            (is_shape_label(shape) && is_method(method)).then_some((shape, method))
        });
        recovered.or_else(|| is_shape_label(name).then_some((name, "")))
    }
}

#[cfg(test)]
mod tests {
    use super::variant::{self, split};
    use super::Shape;
    use crate::spec::RecoveryMethod;

    #[test]
    fn variant_names_read_back_into_shape_and_method() {
        let shapes = [
            Shape::depth(6),
            Shape {
                block_size: 0,
                width: Some("mlp1128".into()),
            },
            Shape {
                block_size: 3,
                width: Some("mlp-75".into()),
            },
        ];
        for shape in &shapes {
            let label = shape.label();
            assert_eq!(split(&variant::pruned(shape)), Some((label.as_str(), "")));
            for m in RecoveryMethod::ALL
                .into_iter()
                .filter(|m| *m != RecoveryMethod::None)
            {
                let name = variant::finetuned(shape, m);
                assert_eq!(split(&name), Some((label.as_str(), m.slug())), "{name}");
            }
            let name = variant::finetuned_on(shape, RecoveryMethod::SelfDistill, "alpaca");
            assert_eq!(
                split(&name),
                Some((label.as_str(), "self-distill-on-alpaca")),
                "{name}"
            );
            assert_eq!(
                variant::split_dataset("self-distill-on-alpaca"),
                Some(("self-distill", "alpaca"))
            );
            assert_eq!(variant::split_dataset("self-distill"), None);
            for suffix in ["dpo", "spin1", "spin12"] {
                let name = variant::preferred(shape, RecoveryMethod::SelfDistillLogitKd, suffix);
                let method = format!("self-distill-logit-kd-{suffix}");
                assert_eq!(split(&name), Some((label.as_str(), method.as_str())));
                assert_eq!(
                    variant::split_preference(&method),
                    Some(("self-distill-logit-kd", suffix))
                );
            }
            assert_eq!(
                split(&variant::control(shape, 7)),
                Some((label.as_str(), "sft-seed7"))
            );
            assert_eq!(
                split(&variant::merged(shape)),
                Some((label.as_str(), "merged"))
            );
        }
        for odd in [
            "base",
            "teacher",
            "nx-sft",
            "n6-unknown",
            "w-",
            "x-sft",
            "n-sft",
            "n6-sft-spin",
            "n6-dpo",
            "n6-merged-dpo",
        ] {
            assert_eq!(split(odd), None, "{odd}");
        }
        assert!(variant::is_shape_label("n3-w-a-b"));
        assert!(!variant::is_shape_label("n3-w"));
        assert!(!variant::is_shape_label("n3-x"));
    }
}
