//! Reading (memory-mapped, single file or sharded with an index) and writing safetensors.

use super::error::{ModelError, Result};
use super::llama::WeightSource;
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, View};
use safetensors::SafeTensors;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// Weights of an HF directory, memory-mapped; tensors are converted to `dtype` on `device`
/// when fetched.
pub struct SafetensorsWeights {
    files: Vec<MappedFile>,
    index: HashMap<String, usize>,
    dtype: DType,
    device: Device,
}

fn st_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        file: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The shard file of the index entry `tensor` → `shard`: a plain file name (a single normal
/// path component), so that every shard is read from the model directory itself. Absolute
/// paths, `..`, subdirectories, empty names and non-strings are refused: the index comes with
/// the model and must not make the loader read (and hash, convert or upload) other files.
fn shard_file_name<'a>(
    index: &Path,
    tensor: &str,
    shard: &'a serde_json::Value,
) -> Result<&'a str> {
    let refuse = |reason| ModelError::ShardName {
        index: index.display().to_string(),
        tensor: tensor.to_string(),
        shard: shard.to_string(),
        reason,
    };
    let name = shard.as_str().ok_or_else(|| refuse("is not a string"))?;
    let path = Path::new(name);
    if name.is_empty() {
        return Err(refuse("is empty"));
    }
    if path.has_root() || path.is_absolute() {
        return Err(refuse("is an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refuse("leaves the model directory through `..`"));
    }
    match path.components().collect::<Vec<_>>().as_slice() {
        [Component::Normal(n)] if *n == OsStr::new(name) => Ok(name),
        _ => Err(refuse("is not a plain file name (it has directory parts)")),
    }
}

impl SafetensorsWeights {
    /// Opens `model.safetensors` or the shards listed in `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| st_err(&index, format!("index is not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| st_err(&index, "index has no `weight_map` object"))?;
            let mut files = map
                .iter()
                .map(|(tensor, shard)| shard_file_name(&index, tensor, shard))
                .collect::<Result<Vec<&str>>>()?;
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(ModelError::Missing {
                dir: dir.display().to_string(),
                name: "model.safetensors".into(),
                hint: "expected model.safetensors or model.safetensors.index.json with shards"
                    .into(),
            });
        };
        Self::open_files(&paths, dtype, device)
    }

    pub fn open_files(paths: &[PathBuf], dtype: DType, device: &Device) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
            // SAFETY: read-only map; the file is not modified while we hold it.
            let mmap = unsafe { Mmap::map(&f) }.map_err(|e| ModelError::io(path, e))?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&mmap).map_err(|e| st_err(path, e.to_string()))?;
            for name in metadata.offset_keys() {
                index.insert(name, files.len());
            }
            files.push(MappedFile {
                path: path.clone(),
                mmap,
                header_len,
                metadata,
            });
        }
        Ok(Self {
            files,
            index,
            dtype,
            device: device.clone(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.index.keys().cloned().collect();
        n.sort();
        n
    }

    /// The stored dtype of a tensor.
    pub fn stored_dtype(&self, name: &str) -> Option<Dtype> {
        let f = &self.files[*self.index.get(name)?];
        f.metadata.info(name).map(|i| i.dtype)
    }

    /// The shape of a tensor, read from the header (no data is touched).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let f = &self.files[*self.index.get(name)?];
        f.metadata.info(name).map(|i| i.shape.clone())
    }

    /// The file that holds a tensor (for error messages).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index.get(name).map(|&i| self.files[i].path.as_path())
    }

    /// Loads `name` as f32 values and its shape.
    pub fn load_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let &fi = self.index.get(name).ok_or_else(|| ModelError::Tensor {
            file: self
                .files
                .first()
                .map(|f| f.path.display().to_string())
                .unwrap_or_default(),
            name: name.into(),
            reason: "not found in the checkpoint".into(),
        })?;
        let f = &self.files[fi];
        let info = f
            .metadata
            .info(name)
            .ok_or_else(|| st_err(&f.path, format!("no info for `{name}`")))?;
        let base = 8 + f.header_len;
        let (s, e) = info.data_offsets;
        let bytes = &f.mmap[base + s..base + e];
        let values = decode_f32(info.dtype, bytes).ok_or_else(|| ModelError::Tensor {
            file: f.path.display().to_string(),
            name: name.into(),
            reason: format!(
                "unsupported dtype {:?} (expected F32, F16, BF16 or F64)",
                info.dtype
            ),
        })?;
        Ok((values, info.shape.clone()))
    }
}

/// Little-endian tensor bytes of a float dtype as f32; `None` for other dtypes.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

impl WeightSource for SafetensorsWeights {
    fn tensor(&mut self, name: &str) -> Result<Tensor> {
        let (values, shape) = self.load_f32(name)?;
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// A tensor to write: raw little-endian bytes.
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Storage dtype for saving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    F16,
    BF16,
}

impl SaveDtype {
    /// From HF's `torch_dtype` string; unknown → f32.
    pub fn from_torch(s: Option<&str>) -> Self {
        match s {
            Some("bfloat16") => Self::BF16,
            Some("float16") => Self::F16,
            _ => Self::F32,
        }
    }
    pub fn torch_name(&self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }
}

pub fn encode_f32(values: &[f32], dtype: SaveDtype) -> RawTensor {
    let (dt, bytes) = match dtype {
        SaveDtype::F32 => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        SaveDtype::F16 => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        SaveDtype::BF16 => (
            Dtype::BF16,
            values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    };
    RawTensor {
        dtype: dt,
        shape: vec![values.len()],
        bytes,
    }
}

/// Converts a candle tensor for saving.
pub fn encode_tensor(t: &Tensor, dtype: SaveDtype) -> Result<RawTensor> {
    let values = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let mut raw = encode_f32(&values, dtype);
    raw.shape = t.dims().to_vec();
    Ok(raw)
}

/// A tensor encoded only when the writer reaches it, so that at most one tensor's bytes are in
/// memory while a model is saved. An encoding error is kept and reported after the file is
/// written (the file is then discarded), since [`View::data`] cannot fail.
struct LazyTensor<'a> {
    tensor: &'a Tensor,
    dtype: SaveDtype,
    shape: Vec<usize>,
    error: &'a std::cell::RefCell<Option<ModelError>>,
}

impl SaveDtype {
    fn st_dtype(self) -> Dtype {
        match self {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::F16 => Dtype::F16,
            SaveDtype::BF16 => Dtype::BF16,
        }
    }
    fn bytes_per_value(self) -> usize {
        match self {
            SaveDtype::F32 => 4,
            SaveDtype::F16 | SaveDtype::BF16 => 2,
        }
    }
}

impl View for &LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.st_dtype()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match encode_tensor(self.tensor, self.dtype) {
            Ok(raw) => Cow::Owned(raw.bytes),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bytes_per_value()
    }
}

/// Groups items of `sizes` bytes into shards of at most `max_shard_bytes` (one shard when all
/// fit): indices per shard.
fn shard_plan(sizes: &[usize], max_shard_bytes: usize) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut size = 0;
    for (i, &len) in sizes.iter().enumerate() {
        if size > 0 && size + len > max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        size += len;
        if let Some(last) = shards.last_mut() {
            last.push(i);
        }
    }
    shards
}

/// Writes `model.safetensors`, or shards with `model.safetensors.index.json`, through `write`
/// (which writes the named items of one shard to a path).
fn write_sharded<T>(
    dir: &Path,
    items: &[(String, T)],
    sizes: &[usize],
    max_shard_bytes: usize,
    write: impl Fn(&Path, &[&(String, T)]) -> Result<()>,
) -> Result<()> {
    let total: usize = sizes.iter().sum();
    let shards = shard_plan(sizes, max_shard_bytes);
    if shards.len() == 1 {
        let all: Vec<&(String, T)> = items.iter().collect();
        return write(&dir.join("model.safetensors"), &all);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        let members: Vec<&(String, T)> = shard.iter().map(|&j| &items[j]).collect();
        write(&dir.join(&name), &members)?;
        for (t, _) in members {
            weight_map.insert(t.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    crate::util::fs::write_json_atomic(&dir.join("model.safetensors.index.json"), &index)
        .map_err(|e| ModelError::io(&dir.join("model.safetensors.index.json"), e))
}

fn format_meta() -> HashMap<String, String> {
    [("format".to_string(), "pt".to_string())].into()
}

/// Writes tensors as `model.safetensors`, or as shards of at most `max_shard_bytes` with
/// `model.safetensors.index.json` when larger. Files are written to temp names and renamed.
pub fn write_safetensors(
    dir: &Path,
    tensors: &[(String, RawTensor)],
    max_shard_bytes: usize,
) -> Result<()> {
    let sizes: Vec<usize> = tensors.iter().map(|(_, t)| t.bytes.len()).collect();
    write_sharded(dir, tensors, &sizes, max_shard_bytes, |path, items| {
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(
            items.iter().map(|(n, t)| (n.as_str(), t)),
            Some(format_meta()),
            &tmp,
        )
        .map_err(|e| st_err(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    })
}

/// [`write_safetensors`] for candle tensors, converted to `dtype` one at a time as they are
/// written: memory beyond the model is one tensor, not the whole encoded model.
pub fn write_tensors_streamed(
    dir: &Path,
    tensors: &[(String, Tensor)],
    dtype: SaveDtype,
    max_shard_bytes: usize,
) -> Result<()> {
    let sizes: Vec<usize> = tensors
        .iter()
        .map(|(_, t)| t.elem_count() * dtype.bytes_per_value())
        .collect();
    write_sharded(dir, tensors, &sizes, max_shard_bytes, |path, items| {
        let tmp = path.with_extension("safetensors.tmp");
        let error = std::cell::RefCell::new(None);
        let lazy: Vec<(&str, LazyTensor<'_>)> = items
            .iter()
            .map(|(n, t)| {
                let tensor = LazyTensor {
                    tensor: t,
                    dtype,
                    shape: t.dims().to_vec(),
                    error: &error,
                };
                (n.as_str(), tensor)
            })
            .collect();
        let written = safetensors::serialize_to_file(
            lazy.iter().map(|(n, t)| (*n, t)),
            Some(format_meta()),
            &tmp,
        )
        .map_err(|e| st_err(&tmp, e.to_string()));
        drop(lazy);
        if let Some(e) = error.into_inner().map(Err).unwrap_or(written).err() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    fn write_index(dir: &Path, weight_map: serde_json::Value) {
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn index_shards_outside_the_model_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        // A readable safetensors file next to the model directory, and one in a subdirectory.
        let outside = vec![("secret".to_string(), encode_f32(&[7.0], SaveDtype::F32))];
        write_safetensors(root.path(), &outside, usize::MAX).unwrap();
        let model = root.path().join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        write_safetensors(&model.join("sub"), &outside, usize::MAX).unwrap();
        // The model itself: two shards and their index.
        let tensors: Vec<(String, RawTensor)> = (0..2)
            .map(|i| (format!("w{i}"), encode_f32(&[i as f32; 4], SaveDtype::F32)))
            .collect();
        write_safetensors(&model, &tensors, 16).unwrap();
        let opened = SafetensorsWeights::open_dir(&model, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(opened.names(), ["w0", "w1"]);

        let abs = root.path().join("model.safetensors");
        let hostile = [
            serde_json::json!("../model.safetensors"),
            serde_json::json!(abs.display().to_string()),
            serde_json::json!("sub/../../model.safetensors"),
            serde_json::json!("sub/model.safetensors"),
            serde_json::json!("./model-00001-of-00002.safetensors"),
            serde_json::json!(""),
            serde_json::json!(".."),
            serde_json::json!(3),
        ];
        for shard in hostile {
            write_index(
                &model,
                serde_json::json!({"w0": "model-00001-of-00002.safetensors", "secret": shard}),
            );
            let err = SafetensorsWeights::open_dir(&model, DType::F32, &Device::Cpu)
                .err()
                .unwrap_or_else(|| panic!("shard {shard} was opened"));
            match &err {
                ModelError::ShardName {
                    tensor, shard: s, ..
                } => {
                    assert_eq!(tensor, "secret");
                    assert_eq!(*s, shard.to_string());
                }
                other => panic!("shard {shard}: {other}"),
            }
            let text = err.to_string();
            assert!(
                text.contains("model.safetensors.index.json")
                    && text.contains("`secret`")
                    && text.contains("plain file names"),
                "{text}"
            );
        }
    }

    #[test]
    fn streamed_writing_gives_the_files_of_eager_writing() {
        let dev = Device::Cpu;
        let tensors: Vec<(String, Tensor)> = (0..5)
            .map(|i| {
                let t = Tensor::arange(0f32, (6 * (i + 1)) as f32, &dev)
                    .unwrap()
                    .affine(0.37, -1.0)
                    .unwrap()
                    .reshape((i + 1, 6))
                    .unwrap();
                (format!("layer.{i}.weight"), t)
            })
            .collect();
        for (dtype, max_shard) in [
            (SaveDtype::BF16, usize::MAX),
            (SaveDtype::F16, 40),
            (SaveDtype::F32, 100),
        ] {
            let eager = tempfile::tempdir().unwrap();
            let streamed = tempfile::tempdir().unwrap();
            let raw: Vec<(String, RawTensor)> = tensors
                .iter()
                .map(|(n, t)| (n.clone(), encode_tensor(t, dtype).unwrap()))
                .collect();
            write_safetensors(eager.path(), &raw, max_shard).unwrap();
            write_tensors_streamed(streamed.path(), &tensors, dtype, max_shard).unwrap();
            let (a, b) = (files(eager.path()), files(streamed.path()));
            assert_eq!(a, b, "{dtype:?}, shards of {max_shard} bytes");
            assert_eq!(a.len() > 1, max_shard < usize::MAX, "{a:?}");
        }
    }
}
