//! Small f32 safetensors files (adapters, optimizer moments), written atomically.

use super::error::{Result, TrainError};
use crate::model::safetensors_io::{encode_f32, RawTensor, SaveDtype};
use candle_core::{DType, Device};
use std::collections::BTreeMap;
use std::path::Path;

/// A named f32 tensor: name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Tensors by name: shape and values.
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Writes `tensors` as one safetensors file (temporary file, then rename).
pub fn write(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let raw: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(n, shape, v)| {
            let mut t = encode_f32(v, SaveDtype::F32);
            t.shape = shape.clone();
            (n.clone(), t)
        })
        .collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    let meta: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(raw.iter().map(|(n, t)| (n.as_str(), t)), Some(meta), &tmp)
        .map_err(|e| TrainError::checkpoint(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    Ok(())
}

/// Reads every tensor of a safetensors file as f32.
pub fn read(path: &Path) -> Result<TensorMap> {
    if !path.exists() {
        return Err(TrainError::checkpoint(path, "file not found"));
    }
    let w = crate::model::safetensors_io::SafetensorsWeights::open_files(
        &[path.to_path_buf()],
        DType::F32,
        &Device::Cpu,
    )?;
    let mut out = BTreeMap::new();
    for name in w.names() {
        let (values, shape) = w.load_f32(&name)?;
        out.insert(name, (shape, values));
    }
    Ok(out)
}
