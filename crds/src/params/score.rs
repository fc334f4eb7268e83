use serde::{Deserialize, Serialize};

use crate::spec::{CalibrationSpec, ScoreMetric};

/// `score`: layer importance on the calibration set for every block size; reports the best
/// allowed block per size. Input `model`: the imported model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoreParams {
    /// Calibration data.
    pub calibration: CalibrationSpec,
    /// Metric.
    pub metric: ScoreMetric,
    /// Block sizes to score (sorted, unique).
    pub block_sizes: Vec<u32>,
    /// Never choose a block containing layer 0.
    pub exclude_first_layer: bool,
    /// Never choose a block containing the last layer.
    pub exclude_last_layer: bool,
}
