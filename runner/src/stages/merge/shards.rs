//! Writing the merged weights shard by shard, so that at most one shard of merged tensors is
//! held in memory. The layout is that of `safetensors_io::write_safetensors`: one
//! `model.safetensors`, or `model-0000i-of-0000n.safetensors` files of at most
//! `max_shard_bytes` (greedy, in tensor order) with `model.safetensors.index.json`.

use crate::model::safetensors_io::{write_safetensors, RawTensor};
use crate::stages::{Result, StageError};
use crate::util::fs::write_json_atomic;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Groups consecutive tensors of `sizes` bytes into shards of at most `max_shard_bytes`
/// (a tensor larger than the limit gets a shard of its own).
pub fn plan(sizes: &[usize], max_shard_bytes: usize) -> Vec<Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, &s) in sizes.iter().enumerate() {
        if size > 0 && size + s > max_shard_bytes {
            shards.push(start..i);
            start = i;
            size = 0;
        }
        size += s;
    }
    shards.push(start..sizes.len());
    shards
}

/// Writes planned shards one at a time into `dir`.
pub struct ShardWriter {
    dir: PathBuf,
    count: usize,
    written: usize,
    total_bytes: usize,
    weight_map: serde_json::Map<String, serde_json::Value>,
}

impl ShardWriter {
    pub fn new(dir: &Path, count: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            count,
            written: 0,
            total_bytes: 0,
            weight_map: serde_json::Map::new(),
        }
    }

    pub fn file_name(&self, index: usize) -> String {
        if self.count == 1 {
            "model.safetensors".into()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", index + 1, self.count)
        }
    }

    /// Writes the next shard.
    pub fn write(&mut self, tensors: &[(String, RawTensor)]) -> Result<()> {
        let index = self.written;
        if index >= self.count {
            return Err(StageError::Input(format!(
                "internal: shard {} of {} written",
                index + 1,
                self.count
            )));
        }
        let name = self.file_name(index);
        if self.count == 1 {
            write_safetensors(&self.dir, tensors, usize::MAX)?;
        } else {
            // write_safetensors names a single file model.safetensors: write it in a scratch
            // directory and move it to its shard name.
            let scratch = self.dir.join(format!(".shard-{index}.tmp"));
            std::fs::create_dir_all(&scratch).map_err(|e| StageError::io(&scratch, e))?;
            write_safetensors(&scratch, tensors, usize::MAX)?;
            let target = self.dir.join(&name);
            std::fs::rename(scratch.join("model.safetensors"), &target)
                .map_err(|e| StageError::io(&target, e))?;
            std::fs::remove_dir(&scratch).map_err(|e| StageError::io(&scratch, e))?;
        }
        for (n, t) in tensors {
            self.weight_map.insert(n.clone(), name.clone().into());
            self.total_bytes += t.bytes.len();
        }
        self.written += 1;
        Ok(())
    }

    /// Writes the index (when sharded); returns the weight file names.
    pub fn finish(self) -> Result<Vec<String>> {
        if self.written != self.count {
            return Err(StageError::Input(format!(
                "internal: {} of {} shards written",
                self.written, self.count
            )));
        }
        let names = (0..self.count).map(|i| self.file_name(i)).collect();
        if self.count > 1 {
            let path = self.dir.join("model.safetensors.index.json");
            let index = serde_json::json!({
                "metadata": {"total_size": self.total_bytes},
                "weight_map": self.weight_map,
            });
            write_json_atomic(&path, &index).map_err(|e| StageError::io(&path, e))?;
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::safetensors_io::{encode_f32, SafetensorsWeights, SaveDtype};
    use candle_core::{DType, Device};

    #[test]
    fn plan_groups_greedily() {
        assert_eq!(plan(&[4, 4, 4], 100), vec![0..3]);
        assert_eq!(plan(&[4, 4, 4], 8), vec![0..2, 2..3]);
        assert_eq!(plan(&[10, 1, 1], 8), vec![0..1, 1..3]);
        assert_eq!(plan(&[], 8), vec![0..0]);
    }

    #[test]
    fn sharded_output_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let tensors: Vec<(String, Vec<f32>)> = (0..5)
            .map(|i| (format!("t{i}"), vec![i as f32; 3 + i]))
            .collect();
        let sizes: Vec<usize> = tensors.iter().map(|(_, v)| v.len() * 2).collect();
        let shards = plan(&sizes, 12);
        assert!(shards.len() > 1);
        let mut w = ShardWriter::new(dir.path(), shards.len());
        for r in &shards {
            let enc: Vec<(String, RawTensor)> = tensors[r.clone()]
                .iter()
                .map(|(n, v)| (n.clone(), encode_f32(v, SaveDtype::BF16)))
                .collect();
            w.write(&enc).unwrap();
        }
        let files = w.finish().unwrap();
        assert_eq!(files.len(), shards.len());
        let st = SafetensorsWeights::open_dir(dir.path(), DType::F32, &Device::Cpu).unwrap();
        for (n, v) in &tensors {
            assert_eq!(&st.load_f32(n).unwrap().0, v);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}
