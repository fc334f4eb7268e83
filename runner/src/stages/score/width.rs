//! Activation importance for width pruning, as Minitron defines it (Muralidharan et al. 2024,
//! "Compact Language Models via Pruning and Knowledge Distillation", §2.2) and NVIDIA's
//! ModelOpt computes it:
//!
//! - an MLP neuron: the SwiGLU activation entering `down_proj`;
//! - an attention head: the attention output entering `o_proj`, per channel, then the L2
//!   norm over the head's `head_dim` channels; a KV group (what GQA lets us remove whole):
//!   the L2 norm over the channels of all its query heads;
//! - an embedding channel: the outputs of both RMSNorms of every layer, one score per norm,
//!   summed over the norms.
//!
//! Each score aggregates `|a|` over the tokens of a sequence (`mean`, ModelOpt's choice, or
//! `l2`) and then over sequences (`l2`, ModelOpt's choice, or `mean`). Padding positions are
//! left out. Written to [`WIDTH_FILE`] (safetensors, f32) next to `scores.json`.

use crate::model::Site;
use crate::stages::{Result, StageError};
use candle_core::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub const WIDTH_FILE: &str = "width_importance.safetensors";
pub const WIDTH_FORMAT: &str = "pruneforge.width_importance/v1";

pub use pruneforge_api::spec::{Reduce, WidthAggregation};

/// The shape the accumulator expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WidthShape {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl WidthShape {
    pub fn of(cfg: &crate::model::ModelConfig) -> Self {
        Self {
            layers: cfg.num_hidden_layers,
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
            q_heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        }
    }

    fn width(&self, site: Site) -> usize {
        match site {
            Site::InputNorm | Site::PostAttnNorm => self.hidden,
            Site::AttnOut => self.q_heads * self.head_dim,
            Site::MlpAct => self.intermediate,
        }
    }
}

const SITES: [Site; 4] = [
    Site::InputNorm,
    Site::AttnOut,
    Site::PostAttnNorm,
    Site::MlpAct,
];

fn site_index(site: Site) -> usize {
    match site {
        Site::InputNorm => 0,
        Site::AttnOut => 1,
        Site::PostAttnNorm => 2,
        Site::MlpAct => 3,
    }
}

/// Sums over sequences, per layer and site: `Σ v` (batch mean) or `Σ v²` (batch L2), where
/// `v[c]` is the sequence aggregate of channel `c`.
pub struct WidthAccumulator {
    shape: WidthShape,
    aggregation: WidthAggregation,
    sums: Vec<[Vec<f64>; 4]>,
    lengths: Vec<usize>,
    rows: u64,
    tokens: u64,
}

impl WidthAccumulator {
    pub fn new(shape: WidthShape, aggregation: WidthAggregation) -> Self {
        let sums = (0..shape.layers)
            .map(|_| SITES.map(|s| vec![0.0; shape.width(s)]))
            .collect();
        Self {
            shape,
            aggregation,
            sums,
            lengths: Vec::new(),
            rows: 0,
            tokens: 0,
        }
    }

    /// Starts a batch whose row `r` has `lengths[r]` real tokens (the rest is padding).
    pub fn begin_batch(&mut self, lengths: &[usize]) {
        self.lengths = lengths.to_vec();
        self.rows += lengths.iter().filter(|&&n| n > 0).count() as u64;
        self.tokens += lengths.iter().map(|&n| n as u64).sum::<u64>();
    }

    /// Adds the activations `a` `[b, t, width]` at `site` of layer `layer`.
    pub fn observe(&mut self, layer: usize, site: Site, a: &Tensor) -> candle_core::Result<()> {
        let width = self.shape.width(site);
        let (b, t, w) = a.dims3()?;
        if layer >= self.shape.layers || w != width || b != self.lengths.len() {
            candle_core::bail!(
                "activations of layer {layer} at {site:?} have shape [{b}, {t}, {w}], expected [{}, _, {width}] within {} layers",
                self.lengths.len(),
                self.shape.layers
            );
        }
        let data = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let sums = &mut self.sums[layer][site_index(site)];
        let mut v = vec![0f64; width];
        for (r, &len) in self.lengths.iter().enumerate() {
            let len = len.min(t);
            if len == 0 {
                continue;
            }
            v.iter_mut().for_each(|x| *x = 0.0);
            for s in 0..len {
                let row = &data[(r * t + s) * width..(r * t + s + 1) * width];
                match self.aggregation.sequence {
                    Reduce::Mean => v
                        .iter_mut()
                        .zip(row)
                        .for_each(|(x, &a)| *x += a.abs() as f64),
                    Reduce::L2 => v
                        .iter_mut()
                        .zip(row)
                        .for_each(|(x, &a)| *x += (a as f64) * (a as f64)),
                }
            }
            for (sum, x) in sums.iter_mut().zip(&v) {
                let x = match self.aggregation.sequence {
                    Reduce::Mean => x / len as f64,
                    Reduce::L2 => x.sqrt(),
                };
                *sum += match self.aggregation.batch {
                    Reduce::Mean => x,
                    Reduce::L2 => x * x,
                };
            }
        }
        Ok(())
    }

    /// The scores; an error when no token was seen.
    pub fn finish(self) -> Result<WidthImportance> {
        if self.rows == 0 {
            return Err(StageError::Input(
                "no calibration tokens: width importance needs at least one sequence".into(),
            ));
        }
        let rows = self.rows as f64;
        let agg = |sums: &[f64]| -> Vec<f64> {
            sums.iter()
                .map(|&s| match self.aggregation.batch {
                    Reduce::Mean => s / rows,
                    Reduce::L2 => s.sqrt(),
                })
                .collect()
        };
        let sh = self.shape;
        let per_group = sh.q_heads / sh.kv_heads.max(1);
        let mut hidden = vec![0f64; sh.hidden];
        let mut layers = Vec::with_capacity(sh.layers);
        for sums in &self.sums {
            for norm in [&sums[0], &sums[2]] {
                hidden.iter_mut().zip(agg(norm)).for_each(|(h, x)| *h += x);
            }
            let channels = agg(&sums[1]);
            let heads: Vec<f64> = channels
                .chunks(sh.head_dim)
                .map(|c| c.iter().map(|x| x * x).sum::<f64>().sqrt())
                .collect();
            let groups = heads
                .chunks(per_group.max(1))
                .map(|h| h.iter().map(|x| x * x).sum::<f64>().sqrt())
                .collect();
            layers.push(LayerImportance {
                mlp: agg(&sums[3]),
                heads,
                groups,
            });
        }
        Ok(WidthImportance {
            aggregation: self.aggregation,
            rows: self.rows,
            tokens: self.tokens,
            model_sha256: String::new(),
            hidden,
            layers,
        })
    }
}

/// One layer's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerImportance {
    /// Per MLP neuron (`intermediate_size`).
    pub mlp: Vec<f64>,
    /// Per query head (`num_attention_heads`).
    pub heads: Vec<f64>,
    /// Per KV group (`num_key_value_heads`).
    pub groups: Vec<f64>,
}

/// Every activation importance of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct WidthImportance {
    pub aggregation: WidthAggregation,
    pub rows: u64,
    pub tokens: u64,
    /// The scored model's digest (set before writing; checked by `prune`).
    pub model_sha256: String,
    /// Per embedding channel (`hidden_size`).
    pub hidden: Vec<f64>,
    pub layers: Vec<LayerImportance>,
}

fn bytes_f32(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
}

impl WidthImportance {
    /// Writes the scores as safetensors (`hidden`, `layers.{l}.mlp|heads|groups`, f32) with
    /// the aggregation, counts and model digest in the metadata; temp file, then rename.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Vec<u8>, usize)> =
            vec![("hidden".into(), bytes_f32(&self.hidden), self.hidden.len())];
        for (l, layer) in self.layers.iter().enumerate() {
            for (kind, v) in [
                ("mlp", &layer.mlp),
                ("heads", &layer.heads),
                ("groups", &layer.groups),
            ] {
                named.push((format!("layers.{l}.{kind}"), bytes_f32(v), v.len()));
            }
        }
        let views = named
            .iter()
            .map(|(name, bytes, n)| {
                TensorView::new(Dtype::F32, vec![*n], bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| StageError::Input(format!("width importance tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: HashMap<String, String> = [
            ("format", WIDTH_FORMAT.to_string()),
            ("sequence", self.aggregation.sequence.as_str().into()),
            ("batch", self.aggregation.batch.as_str().into()),
            ("rows", self.rows.to_string()),
            ("tokens", self.tokens.to_string()),
            ("layers", self.layers.len().to_string()),
            ("model_sha256", self.model_sha256.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| StageError::Input(format!("serializing width importance: {e}")))?;
        crate::util::fs::write_atomic(path, &bytes).map_err(|e| StageError::io(path, e))
    }

    /// Reads a file written by [`WidthImportance::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |what: String| {
            StageError::Input(format!(
                "{}: not a width importance file of `pruneforge score` ({what}); re-run `score` with width importance",
                path.display()
            ))
        };
        let bytes = std::fs::read(path).map_err(|e| StageError::io(path, e))?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e}")))?;
        let md = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("no `{k}` in metadata")))
        };
        if get("format")? != WIDTH_FORMAT {
            return Err(bad(format!("format is not {WIDTH_FORMAT}")));
        }
        let reduce = |k: &str| -> Result<Reduce> {
            let v = get(k)?;
            v.parse::<Reduce>().map_err(|e| bad(format!("`{k}`: {e}")))
        };
        let count = |k: &str| -> Result<u64> {
            let v = get(k)?;
            v.parse().map_err(|_| bad(format!("`{k}` is `{v}`")))
        };
        let vector = |name: &str| -> Result<Vec<f64>> {
            let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
            if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
                return Err(bad(format!("{name} is not a 1-d f32 tensor")));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect())
        };
        let n_layers = count("layers")? as usize;
        if n_layers > 100_000 {
            return Err(bad(format!("{n_layers} layers")));
        }
        let layers = (0..n_layers)
            .map(|l| {
                Ok(LayerImportance {
                    mlp: vector(&format!("layers.{l}.mlp"))?,
                    heads: vector(&format!("layers.{l}.heads"))?,
                    groups: vector(&format!("layers.{l}.groups"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            aggregation: WidthAggregation {
                sequence: reduce("sequence")?,
                batch: reduce("batch")?,
            },
            rows: count("rows")?,
            tokens: count("tokens")?,
            model_sha256: get("model_sha256")?,
            hidden: vector("hidden")?,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn shape() -> WidthShape {
        WidthShape {
            layers: 1,
            hidden: 2,
            intermediate: 2,
            q_heads: 4,
            kv_heads: 2,
            head_dim: 1,
        }
    }

    /// Two rows, the second padded after one token: hand-computed scores for both
    /// aggregations.
    #[test]
    fn aggregates_by_hand_and_ignores_padding() {
        let dev = Device::Cpu;
        let mlp = Tensor::new(
            &[[[1f32, -2.0], [3.0, 0.0]], [[-4.0, 1.0], [100.0, 100.0]]],
            &dev,
        )
        .unwrap();
        let attn = Tensor::new(
            &[
                [[1f32, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 2.0]],
                [[1.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]],
            ],
            &dev,
        )
        .unwrap();
        let norm =
            Tensor::new(&[[[1f32, 1.0], [1.0, 1.0]], [[2.0, 0.0], [7.0, 7.0]]], &dev).unwrap();
        let run = |aggregation| {
            let mut acc = WidthAccumulator::new(shape(), aggregation);
            acc.begin_batch(&[2, 1]);
            acc.observe(0, Site::MlpAct, &mlp).unwrap();
            acc.observe(0, Site::AttnOut, &attn).unwrap();
            acc.observe(0, Site::InputNorm, &norm).unwrap();
            acc.observe(0, Site::PostAttnNorm, &norm).unwrap();
            acc.finish().unwrap()
        };
        let w = run(WidthAggregation::default());
        // Row means of |a|: row 0 (2, 1), row 1 (4, 1); L2 over rows.
        assert_eq!(w.layers[0].mlp, vec![20f64.sqrt(), 2f64.sqrt()]);
        // Channels: row 0 (1, 0, 2, 2), row 1 (1, 0, 0, 0) → (√2, 0, 2, 2); heads of dim 1.
        assert_eq!(w.layers[0].heads, vec![2f64.sqrt(), 0.0, 2.0, 2.0]);
        // Groups of two heads.
        assert_eq!(w.layers[0].groups, vec![2f64.sqrt(), 8f64.sqrt()]);
        // Norm: rows (1, 1), (2, 0) → (√5, 1), summed over the two norms.
        assert_eq!(w.hidden, vec![2.0 * 5f64.sqrt(), 2.0]);
        assert_eq!((w.rows, w.tokens), (2, 3));
        let m = run(WidthAggregation {
            sequence: Reduce::L2,
            batch: Reduce::Mean,
        });
        // Row L2 of a: row 0 (√10, 2), row 1 (4, 1); mean over rows.
        assert_eq!(m.layers[0].mlp, vec![(10f64.sqrt() + 4.0) / 2.0, 1.5]);
    }

    #[test]
    fn wrong_width_is_an_error_and_empty_input_too() {
        let mut acc = WidthAccumulator::new(shape(), WidthAggregation::default());
        acc.begin_batch(&[1]);
        let t = Tensor::zeros((1, 1, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(acc.observe(0, Site::MlpAct, &t).is_err());
        let empty = WidthAccumulator::new(shape(), WidthAggregation::default());
        assert!(empty.finish().is_err());
    }

    #[test]
    fn file_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WidthImportance {
            aggregation: WidthAggregation::default(),
            rows: 3,
            tokens: 7,
            model_sha256: "abc".into(),
            hidden: vec![1.0, 0.5],
            layers: vec![LayerImportance {
                mlp: vec![0.25, 2.0, 3.0],
                heads: vec![1.0, 2.0],
                groups: vec![4.0],
            }],
        };
        let path = tmp.path().join(WIDTH_FILE);
        w.write(&path).unwrap();
        assert_eq!(WidthImportance::read(&path).unwrap(), w);
        std::fs::write(&path, b"not safetensors").unwrap();
        let e = WidthImportance::read(&path).unwrap_err().to_string();
        assert!(e.contains("re-run `score`"), "{e}");
    }
}
