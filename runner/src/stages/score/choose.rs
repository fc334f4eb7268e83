//! Choosing the block to remove for each block size: the argmin of the configured metric over
//! the allowed starts, ties to the smallest start, with the runner-up and the margin.

use serde::{Deserialize, Serialize};

pub use pruneforge_api::spec::ScoreMetric;

/// Serde for a [`ScoreMetric`] in `scores.json` and `prune.json`: written in the files'
/// snake_case spelling (`angular_last_token`), read in either spelling.
pub mod metric_serde {
    use super::ScoreMetric;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &ScoreMetric, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.as_str().replace('-', "_"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ScoreMetric, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Which layers a removed block may contain. Layer 0 (it turns token embeddings into the
/// residual stream) and the last layer (it prepares the final norm and LM head) are usually
/// essential, so both are excluded unless asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerLimits {
    pub include_first_layer: bool,
    pub include_last_layer: bool,
}

impl LayerLimits {
    /// Starts `l` of blocks `[l, l + n)` allowed in a model of `num_layers` layers.
    pub fn allowed_starts(&self, num_layers: usize, n: usize) -> Vec<usize> {
        if n == 0 || n > num_layers {
            return Vec::new();
        }
        (0..=num_layers - n)
            .filter(|&l| self.include_first_layer || l >= 1)
            .filter(|&l| self.include_last_layer || l + n < num_layers)
            .collect()
    }
}

/// The chosen block of one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockChoice {
    /// Block size.
    pub n: usize,
    /// First removed layer.
    pub start: usize,
    /// Last removed layer (inclusive).
    pub end: usize,
    /// The metric's value for this block.
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up_start: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up_score: Option<f64>,
    /// `runner_up_score − score` (≥ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

/// Argmin of `values[l]` over `starts` (ties → smallest `l`); `None` values (not computed)
/// are skipped. `None` when no start is left.
pub fn choose_block(n: usize, values: &[Option<f64>], starts: &[usize]) -> Option<BlockChoice> {
    let mut ranked: Vec<(f64, usize)> = starts
        .iter()
        .filter_map(|&l| values.get(l).copied().flatten().map(|v| (v, l)))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let &(score, start) = ranked.first()?;
    let runner = ranked.get(1).copied();
    Some(BlockChoice {
        n,
        start,
        end: start + n - 1,
        score,
        runner_up_start: runner.map(|r| r.1),
        runner_up_score: runner.map(|r| r.0),
        margin: runner.map(|r| r.0 - score),
    })
}

/// [`choose_block`] on a fully computed vector.
pub fn choose_block_dense(n: usize, values: &[f64], starts: &[usize]) -> Option<BlockChoice> {
    let v: Vec<Option<f64>> = values.iter().copied().map(Some).collect();
    choose_block(n, &v, starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_exclude_first_and_last_layer() {
        let l = LayerLimits::default();
        assert_eq!(l.allowed_starts(6, 2), vec![1, 2, 3]);
        let all = LayerLimits {
            include_first_layer: true,
            include_last_layer: true,
        };
        assert_eq!(all.allowed_starts(6, 2), vec![0, 1, 2, 3, 4]);
        assert!(l.allowed_starts(4, 3).is_empty());
        assert!(l.allowed_starts(4, 5).is_empty());
    }

    #[test]
    fn argmin_ties_runner_up_and_margin() {
        let v = [Some(0.3), Some(0.1), None, Some(0.1), Some(0.25)];
        let c = choose_block(2, &v, &[0, 1, 2, 3, 4]).unwrap();
        assert_eq!((c.start, c.end, c.score), (1, 2, 0.1));
        assert_eq!(c.runner_up_start, Some(3));
        assert_eq!(c.margin, Some(0.0));
        let c = choose_block(2, &v, &[4]).unwrap();
        assert_eq!((c.start, c.runner_up_start, c.margin), (4, None, None));
        assert!(choose_block(2, &v, &[2]).is_none());
        assert_eq!(
            "perplexity".parse::<ScoreMetric>(),
            Ok(ScoreMetric::Perplexity)
        );
        assert!("cosine".parse::<ScoreMetric>().is_err());
    }
}
