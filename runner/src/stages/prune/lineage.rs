//! Where a pruned model's layers and embedding channels came from: `pruning.json` in the
//! pruned model's directory. Hidden-state distillation reads it to pair every student layer
//! with the teacher layer it was cut from, and to select the teacher's kept embedding
//! channels (the identity projection where widths differ).

use crate::stages::{Result, StageError};
use crate::util::fs::write_json_atomic;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name inside a pruned model directory.
pub const LINEAGE_FILE: &str = "pruning.json";
const FORMAT: &str = "pruneforge-pruning/1";

/// What pruning kept of the source model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningLineage {
    pub format: String,
    /// Layers of the source model.
    pub source_layers: usize,
    /// `hidden_size` of the source model.
    pub source_hidden_size: usize,
    /// For each layer of the pruned model, the source layer it was cut from.
    pub kept_layers: Vec<usize>,
    /// For each embedding channel of the pruned model, the source channel; `None` when no
    /// channel was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_hidden_channels: Option<Vec<usize>>,
    /// SHA-256 of the source model's weights.
    pub source_model_sha256: String,
}

impl PruningLineage {
    /// The lineage of removing `removed` layers and keeping `kept_hidden` channels (`None`:
    /// all) of a model with `source_layers` layers and `source_hidden_size` channels.
    pub fn new(
        source_layers: usize,
        source_hidden_size: usize,
        removed: &[usize],
        kept_hidden: Option<Vec<usize>>,
        source_model_sha256: &str,
    ) -> Self {
        let kept_hidden = kept_hidden.filter(|k| k.len() != source_hidden_size);
        PruningLineage {
            format: FORMAT.into(),
            source_layers,
            source_hidden_size,
            kept_layers: (0..source_layers)
                .filter(|l| !removed.contains(l))
                .collect(),
            kept_hidden_channels: kept_hidden,
            source_model_sha256: source_model_sha256.into(),
        }
    }

    /// The lineage of an unpruned model (every layer and channel maps to itself).
    pub fn identity(layers: usize, hidden_size: usize) -> Self {
        Self::new(layers, hidden_size, &[], None, "")
    }

    /// Writes `pruning.json` into `model_dir` (temp file, then rename).
    pub fn write(&self, model_dir: &Path) -> Result<()> {
        let path = model_dir.join(LINEAGE_FILE);
        write_json_atomic(&path, self).map_err(|e| StageError::io(&path, e))
    }

    /// Reads `pruning.json` from `model_dir`; `None` when there is none.
    pub fn read(model_dir: &Path) -> Result<Option<Self>> {
        let path = model_dir.join(LINEAGE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StageError::io(&path, e)),
        };
        let l: PruningLineage = serde_json::from_str(&text).map_err(|e| {
            StageError::Input(format!(
                "{} is not a pruning record: {e}; delete it, or prune the model again",
                path.display()
            ))
        })?;
        if l.format != FORMAT {
            return Err(StageError::Input(format!(
                "{}: format {:?}, expected {FORMAT:?}",
                path.display(),
                l.format
            )));
        }
        l.check()?;
        Ok(Some(l))
    }

    /// Indices within range, strictly increasing.
    fn check(&self) -> Result<()> {
        let increasing_below = |v: &[usize], bound: usize| {
            v.windows(2).all(|w| w[0] < w[1]) && v.iter().all(|&i| i < bound)
        };
        if !increasing_below(&self.kept_layers, self.source_layers) {
            return Err(StageError::Input(format!(
                "{LINEAGE_FILE}: kept_layers must increase and stay below source_layers ({})",
                self.source_layers
            )));
        }
        if let Some(k) = &self.kept_hidden_channels {
            if !increasing_below(k, self.source_hidden_size) {
                return Err(StageError::Input(format!(
                    "{LINEAGE_FILE}: kept_hidden_channels must increase and stay below \
                     source_hidden_size ({})",
                    self.source_hidden_size
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_layers_and_kept_channels_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let l = PruningLineage::new(6, 8, &[2, 3], Some(vec![0, 2, 3, 7]), "abc");
        assert_eq!(l.kept_layers, [0, 1, 4, 5]);
        l.write(dir.path()).unwrap();
        assert_eq!(PruningLineage::read(dir.path()).unwrap(), Some(l));
        // Keeping every channel records none.
        let all = PruningLineage::new(6, 4, &[], Some(vec![0, 1, 2, 3]), "abc");
        assert_eq!(all.kept_hidden_channels, None);
        assert_eq!(
            PruningLineage::read(&dir.path().join("absent")).unwrap(),
            None
        );
    }

    #[test]
    fn out_of_range_indices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = PruningLineage::new(4, 8, &[], None, "");
        l.kept_layers = vec![0, 2, 9];
        l.write(dir.path()).unwrap();
        let e = PruningLineage::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("kept_layers"), "{e}");
    }
}
