//! A bounds-checked GGUF (v2/v3) reader over a memory map. Every length and offset is checked
//! against the file size before use, so a truncated or corrupt file gives an error naming the
//! file and the problem instead of a panic or a huge allocation.

use crate::model::error::ModelError;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Self::U8(v) => v as u64,
            Self::U16(v) => v as u64,
            Self::U32(v) => v as u64,
            Self::U64(v) => v,
            Self::I8(v) if v >= 0 => v as u64,
            Self::I16(v) if v >= 0 => v as u64,
            Self::I32(v) if v >= 0 => v as u64,
            Self::I64(v) if v >= 0 => v as u64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Self::F32(v) => v as f64,
            Self::F64(v) => v,
            _ => return self.as_u64().map(|v| v as f64),
        })
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (columns).
    pub dims: Vec<usize>,
    pub ggml_type: u32,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    mmap: Mmap,
}

/// Bytes per block and elements per block of the ggml types we can read.
pub fn type_layout(t: u32) -> Option<(&'static str, usize, usize)> {
    Some(match t {
        0 => ("F32", 4, 1),
        1 => ("F16", 2, 1),
        2 => ("Q4_0", 18, 32),
        3 => ("Q4_1", 20, 32),
        6 => ("Q5_0", 22, 32),
        7 => ("Q5_1", 24, 32),
        8 => ("Q8_0", 34, 32),
        10 => ("Q2_K", 84, 256),
        11 => ("Q3_K", 110, 256),
        12 => ("Q4_K", 144, 256),
        13 => ("Q5_K", 176, 256),
        14 => ("Q6_K", 210, 256),
        30 => ("BF16", 2, 1),
        _ => return None,
    })
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    file: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: String) -> ModelError {
        ModelError::Gguf {
            file: self.file.display().to_string(),
            reason,
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.err(format!(
                    "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ModelError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count that must be satisfiable by the remaining bytes (each item ≥ `min_item` bytes).
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, ModelError> {
        let n = self.u64(what)?;
        let remaining = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > remaining {
            return Err(self.err(format!(
                "corrupt {what}: {n} entries cannot fit in the remaining {remaining} bytes"
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue, ModelError> {
        Ok(match ty {
            0 => MetaValue::U8(self.take(1, key)?[0]),
            1 => MetaValue::I8(self.take(1, key)?[0] as i8),
            2 => {
                let b = self.take(2, key)?;
                MetaValue::U16(u16::from_le_bytes([b[0], b[1]]))
            }
            3 => {
                let b = self.take(2, key)?;
                MetaValue::I16(i16::from_le_bytes([b[0], b[1]]))
            }
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(self.u32(key)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            7 => MetaValue::Bool(self.take(1, key)?[0] != 0),
            8 => MetaValue::String(self.string(key)?),
            9 => {
                if depth > 4 {
                    return Err(self.err(format!("metadata `{key}`: arrays nested too deeply")));
                }
                let item_ty = self.u32(key)?;
                let n = self.count(key, 1)?;
                // Capacity for the items that are there, not for what the count claims.
                let mut items = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            other => {
                return Err(self.err(format!("metadata `{key}` has unknown value type {other}")))
            }
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the map is read-only; we never hand out references that outlive `self`.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let mut c = Cursor {
            data: &mmap,
            pos: 0,
            file: path,
        };
        let magic = c.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(c.err("not a GGUF file (bad magic; expected `GGUF`)".into()));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut raw_infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.err(format!(
                    "tensor `{name}` has {n_dims} dimensions (expected 1..4)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)? as usize);
            }
            let ty = c.u32(&name)?;
            let offset = c.u64(&name)? as usize;
            raw_infos.push((name, dims, ty, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(MetaValue::as_u64)
            .unwrap_or(32) as usize;
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(c.err(format!(
                "general.alignment {alignment} is not a power of two"
            )));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw_infos.len());
        let mut names = std::collections::BTreeSet::new();
        for (name, dims, ty, offset) in raw_infos {
            if !names.insert(name.clone()) {
                return Err(c.err(format!("tensor `{name}` is listed twice")));
            }
            let (tname, block_bytes, block_elems) = type_layout(ty)
                .ok_or_else(|| c.err(format!("tensor `{name}` has unsupported ggml type {ty}")))?;
            let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let Some(elems) = elems.filter(|e| e % block_elems == 0) else {
                return Err(c.err(format!(
                    "tensor `{name}`: dims {dims:?} are not a whole number of {tname} blocks"
                )));
            };
            let Some(len) = (elems / block_elems).checked_mul(block_bytes) else {
                return Err(c.err(format!(
                    "tensor `{name}`: dims {dims:?} are too large for {tname}"
                )));
            };
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= mmap.len() => {
                    if offset % alignment != 0 {
                        return Err(c.err(format!(
                            "tensor `{name}` offset {offset} is not aligned to {alignment}"
                        )));
                    }
                    tensors.push(TensorInfo {
                        name,
                        dims,
                        ggml_type: ty,
                        start,
                        len,
                    })
                }
                _ => {
                    return Err(c.err(format!(
                        "truncated: tensor `{name}` ({tname}, {len} bytes at data offset {offset}) \
                         extends past the end of the file ({} bytes)",
                        mmap.len()
                    )))
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            mmap,
        })
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.start..info.start + info.len]
    }

    pub fn error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Gguf {
            file: self.path.display().to_string(),
            reason: reason.into(),
        }
    }
}
