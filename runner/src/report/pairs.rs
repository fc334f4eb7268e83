//! Which variants the report compares, item by item. Variants are named as the plan names
//! eval stages (`base`, `n6`, `n6-sft`, `n6-self-distill`, `n6-merged`; see
//! `pruneforge_api::plan::variant`). Per block size:
//! - every recovered variant against the pruned model without fine-tuning (`n6`);
//! - self-distillation (`n6-self-distill…`) against SFT (`n6-sft`);
//! - the merged model against each fine-tuned model of the block size (its possible inputs);
//! - each noise-floor control (`n6-sft-seed7`, the sft arm with another seed) against `n6-sft`;
//! - each preference stage against the model it started from: `n6-sft-dpo` and `n6-sft-spin1`
//!   against `n6-sft`, `n6-sft-spin2` against `n6-sft-spin1`;
//! - across shapes, every width or depth-and-width variant (`w-mlp1128`, `n3-w-mlp1332`) against
//!   every depth-only one (`n6`) with the same recovery: the depth-against-width question.
//!
//! Names are read back with [`variant::split`], the planner's own naming.

/// One comparison: `variant` − `reference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub variant: String,
    pub reference: String,
}

fn pair(variant: &str, reference: &str) -> Pair {
    Pair {
        variant: variant.to_string(),
        reference: reference.to_string(),
    }
}

use pruneforge_api::plan::variant::{self, is_control, split_preference};

/// The recovery part a preference variant's recovery part started from: `sft-dpo` and
/// `sft-spin1` → `sft`, `sft-spin2` → `sft-spin1`; `None` for other recovery parts.
fn preference_start(method: &str) -> Option<String> {
    let (base, suffix) = split_preference(method)?;
    match suffix
        .strip_prefix("spin")
        .and_then(|k| k.parse::<u32>().ok())
    {
        Some(k) if k > 1 => Some(format!("{base}-spin{}", k - 1)),
        _ => Some(base.to_string()),
    }
}

/// Whether a shape label prunes width (`w-…`, `n3-w-…`) rather than depth only.
fn prunes_width(shape: &str) -> bool {
    shape.starts_with("w-") || shape.contains("-w-")
}

/// The comparisons among `variants` (names of evaluated variants, any order).
pub fn comparison_pairs(variants: &[String]) -> Vec<Pair> {
    let mut sizes: Vec<&str> = variants
        .iter()
        .filter_map(|v| variant::split(v).map(|(p, _)| p))
        .collect();
    sizes.sort();
    sizes.dedup();
    // A variant's name from its shape and recovery part ("" for the pruned model).
    let full = |shape: &str, method: &str| {
        if method.is_empty() {
            shape.to_string()
        } else {
            format!("{shape}-{method}")
        }
    };
    let mut out = Vec::new();
    for &size in &sizes {
        let methods: Vec<&str> = variants
            .iter()
            .filter_map(|v| {
                variant::split(v)
                    .filter(|(p, _)| *p == size)
                    .map(|(_, m)| m)
            })
            .filter(|m| !m.is_empty())
            .collect();
        let name = |m: &str| full(size, m);
        if variants.iter().any(|v| v == size) {
            for m in &methods {
                out.push(pair(&name(m), size));
            }
        }
        let preferred = |m: &str| split_preference(m).is_some();
        if methods.contains(&"sft") {
            for m in methods
                .iter()
                .filter(|m| m.starts_with("self-distill") && !preferred(m))
            {
                out.push(pair(&name(m), &name("sft")));
            }
        }
        // The noise-floor controls (`sft-seed<S>`) against the arm they repeat.
        for m in methods.iter().filter(|m| is_control(m)) {
            if methods.contains(&"sft") {
                out.push(pair(&name(m), &name("sft")));
            }
        }
        if methods.contains(&"merged") {
            for m in methods
                .iter()
                .filter(|m| **m != "merged" && !is_control(m) && !preferred(m))
            {
                out.push(pair(&name("merged"), &name(m)));
            }
        }
        // Each preference stage against the model it started from.
        for m in &methods {
            if let Some(start) = preference_start(m) {
                if methods.contains(&start.as_str()) {
                    out.push(pair(&name(m), &name(&start)));
                }
            }
        }
    }
    // Depth against width: each width shape against each depth-only shape, method by method.
    for w in sizes.iter().filter(|s| prunes_width(s)) {
        for d in sizes.iter().filter(|s| !prunes_width(s)) {
            for v in variants {
                let Some((shape, method)) = variant::split(v) else {
                    continue;
                };
                if shape == *w && !is_control(method) && variants.contains(&full(d, method)) {
                    out.push(pair(v, &full(d, method)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_a_full_plan() {
        let variants: Vec<String> = [
            "base",
            "n4",
            "n4-sft",
            "n4-self-distill",
            "n4-merged",
            "n6-sft",
            "n6-self-distill-logit-kd",
        ]
        .map(String::from)
        .to_vec();
        let got: Vec<(String, String)> = comparison_pairs(&variants)
            .into_iter()
            .map(|p| (p.variant, p.reference))
            .collect();
        let want = [
            ("n4-sft", "n4"),
            ("n4-self-distill", "n4"),
            ("n4-merged", "n4"),
            ("n4-self-distill", "n4-sft"),
            ("n4-merged", "n4-sft"),
            ("n4-merged", "n4-self-distill"),
            ("n6-self-distill-logit-kd", "n6-sft"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, want);
        assert!(comparison_pairs(&["base".into(), "nx-sft".into()]).is_empty());
        // merge.across: datasets — the merge against the per-data-set fine-tunes it combines.
        let per_set: Vec<String> = [
            "n6",
            "n6-sft",
            "n6-self-distill",
            "n6-self-distill-on-gsm8k",
            "n6-self-distill-on-alpaca",
            "n6-merged",
        ]
        .map(String::from)
        .to_vec();
        let got: Vec<(String, String)> = comparison_pairs(&per_set)
            .into_iter()
            .map(|p| (p.variant, p.reference))
            .collect();
        for want in [
            ("n6-self-distill-on-gsm8k", "n6"),
            ("n6-merged", "n6-self-distill-on-gsm8k"),
            ("n6-merged", "n6-self-distill-on-alpaca"),
            ("n6-merged", "n6-self-distill"),
        ] {
            assert!(
                got.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} not in {got:?}"
            );
        }
        // Preference stages pair with where they started, not with sft or the merge.
        let pref: Vec<String> = [
            "n6",
            "n6-sft",
            "n6-self-distill",
            "n6-self-distill-spin1",
            "n6-self-distill-spin2",
            "n6-sft-dpo",
            "n6-merged",
        ]
        .map(String::from)
        .to_vec();
        let got: Vec<(String, String)> = comparison_pairs(&pref)
            .into_iter()
            .filter(|p| p.variant.contains("spin") || p.variant.contains("dpo"))
            .map(|p| (p.variant, p.reference))
            .collect();
        let want = [
            ("n6-self-distill-spin1", "n6"),
            ("n6-self-distill-spin2", "n6"),
            ("n6-sft-dpo", "n6"),
            ("n6-self-distill-spin1", "n6-self-distill"),
            ("n6-self-distill-spin2", "n6-self-distill-spin1"),
            ("n6-sft-dpo", "n6-sft"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, want);
        // Width variants pair within their shape, and against depth at the same recovery.
        let grid: Vec<String> = [
            "base",
            "n6",
            "n6-logit-kd",
            "w-mlp1128",
            "w-mlp1128-logit-kd",
            "n3-w-mlp-75",
            "n3-w-mlp-75-logit-kd",
            "n3-w-mlp-75-sft",
        ]
        .map(String::from)
        .to_vec();
        let got: Vec<(String, String)> = comparison_pairs(&grid)
            .into_iter()
            .map(|p| (p.variant, p.reference))
            .collect();
        let want = [
            ("n3-w-mlp-75-logit-kd", "n3-w-mlp-75"),
            ("n3-w-mlp-75-sft", "n3-w-mlp-75"),
            ("n6-logit-kd", "n6"),
            ("w-mlp1128-logit-kd", "w-mlp1128"),
            ("n3-w-mlp-75", "n6"),
            ("n3-w-mlp-75-logit-kd", "n6-logit-kd"),
            ("w-mlp1128", "n6"),
            ("w-mlp1128-logit-kd", "n6-logit-kd"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, want);
        // A noise-floor control pairs with the pruned model and its arm, never with the merge.
        let with_control: Vec<String> = ["n6", "n6-sft", "n6-sft-seed7", "n6-merged"]
            .map(String::from)
            .to_vec();
        let got: Vec<(String, String)> = comparison_pairs(&with_control)
            .into_iter()
            .map(|p| (p.variant, p.reference))
            .collect();
        let want = [
            ("n6-sft", "n6"),
            ("n6-sft-seed7", "n6"),
            ("n6-merged", "n6"),
            ("n6-sft-seed7", "n6-sft"),
            ("n6-merged", "n6-sft"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, want);
    }
}
