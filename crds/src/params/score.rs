use serde::{Deserialize, Serialize};

use crate::builtin::BuiltinDataset;
use crate::spec::{CalibrationSpec, DatasetFormat, ScoreMetric, WidthAggregation};

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
    /// Also score width (activation importance) with this aggregation; set when the spec has
    /// width variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<WidthAggregation>,
}

impl ScoreParams {
    /// Whether the runner's calibration text for this request differs from what runners before
    /// 0.2 read: they took the file by its extension (an Alpaca `.json` array whole, a `.jsonl`
    /// file's `text` field) and ignored `format`, `offset` and `limit`. Only a whole Alpaca
    /// `.json` array (e.g. `builtin:alpaca`) reads the same both ways; every other reference
    /// gets a new cache key (see [`super::StageParams::cache_material`]), so no stale score
    /// artifact is reused.
    pub fn calibration_reads_records_differently(&self) -> bool {
        let d = &self.calibration.dataset;
        let whole_alpaca_array = d.format == DatasetFormat::Alpaca
            && d.offset == 0
            && d.limit.is_none()
            && d.fields.is_none()
            && (d.uri == BuiltinDataset::Alpaca.uri() || d.uri.ends_with(".json"));
        !whole_alpaca_array
    }
}
