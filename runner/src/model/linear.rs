//! Linear projections, possibly several fused into one matrix (q|k|v, gate|up), with an
//! optional LoRA adapter per part (the hook used by fine-tuning).

use super::kernels;
use super::kernels::skinny_int8::{self, Int8Rows};
use super::quant::{BaseQuantization, QuantizedWeight};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use std::ops::Range;
use std::sync::Arc;

/// `x [.., in] · w[out, in]^T`, flattening the leading dimensions into one GEMM.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if let Some(y) = cpu_matmul_t(x, w)? {
        return Ok(y);
    }
    let dims = x.dims();
    if dims.len() == 2 {
        return x.matmul(&w.t()?);
    }
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner.max(1);
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out = dims.to_vec();
    if let Some(last) = out.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(out)
}

/// [`matmul_t`] on the CPU's own kernels when they apply: f32 on the CPU, both contiguous,
/// and no gradient to record (neither is a candle op). At most [`kernels::skinny::MAX_ROWS`]
/// rows of `x` run the few-row kernel ([`kernels::skinny`]); more rows run the `gemm` crate
/// directly ([`gemm_matmul_t`]). `None`: candle's matmul.
fn cpu_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let Some(&inner) = x.dims().last() else {
        return Ok(None);
    };
    let rows = x.elem_count() / inner.max(1);
    if !cpu_kernels_apply(x, w, inner)? {
        return Ok(None);
    }
    let out_features = w.dim(0)?;
    let y = kernels::with_f32(x, |xs| {
        kernels::with_f32(w, |ws| -> Result<Vec<f32>> {
            if rows <= kernels::skinny::MAX_ROWS {
                return Ok(kernels::skinny::matmul_t(xs, rows, inner, ws, out_features));
            }
            gemm_matmul_t(xs, rows, inner, ws, out_features)
        })
    })???;
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out_features;
    }
    Ok(Some(kernels::from_vec(y, &shape)?))
}

/// Whether `x [.., inner] · w^T` can run on the CPU's own kernels: both f32 on the CPU and
/// contiguous, `w` a matrix of `inner` columns, and no gradient to record (neither is a candle
/// op).
fn cpu_kernels_apply(x: &Tensor, w: &Tensor, inner: usize) -> Result<bool> {
    Ok(inner > 0
        && w.rank() == 2
        && w.dim(1)? == inner
        && kernels::usable(x)
        && kernels::usable(w)
        && x.is_contiguous()
        && w.is_contiguous()
        && !x.track_op()
        && !w.track_op())
}

/// `x [.., in] · w^T` by the 8-bit kernel ([`skinny_int8`]) when it applies: f32 on the CPU,
/// contiguous, no gradient to record, and at most [`skinny_int8::MAX_ROWS`] rows. `None`: the
/// caller uses the f32 weight.
pub fn int8_matmul_t(x: &Tensor, w: &Int8Rows) -> Result<Option<Tensor>> {
    let (n, k) = w.dims();
    let Some(&inner) = x.dims().last() else {
        return Ok(None);
    };
    let rows = x.elem_count() / inner.max(1);
    if inner != k
        || rows == 0
        || rows > skinny_int8::MAX_ROWS
        || !kernels::usable(x)
        || !x.is_contiguous()
        || x.track_op()
    {
        return Ok(None);
    }
    let y = kernels::with_f32(x, |xs| skinny_int8::matmul_t(xs, rows, w))?;
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Ok(Some(kernels::from_vec(y, &shape)?))
}

/// An 8-bit copy of a dense f32 weight `[out, in]` on the CPU; `None` for any other weight
/// (another device or dtype, or rows that do not split into blocks of 32).
pub fn int8_copy(w: &Tensor) -> Result<Option<Arc<Int8Rows>>> {
    let (rows, cols) = w.dims2()?;
    if !kernels::usable(w) || !cols.is_multiple_of(skinny_int8::BLOCK) {
        return Ok(None);
    }
    let w = w.contiguous()?;
    let q = kernels::with_f32(&w, |v| Int8Rows::quantize(v, rows, cols))?;
    Ok(q.ok().map(Arc::new))
}

/// `x[m, k] · w[n, k]^T` by the `gemm` crate, row-major in and out, each thread computing
/// its own block of output features ([`Threads::ColumnBlocks`]): the crate packs the weight on
/// every call, and with its own threading every thread packs all of it (a sixth of an
/// evaluation's samples in a profile); by blocks of features each packs its share.
/// `cargo run --release -p pruneforge --example gemm_layouts` compares the ways on the model's
/// shapes: 1.05-1.3x over the crate's threading and over splitting the rows between threads
/// (docs/RESULTS.md).
fn gemm_matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Result<Vec<f32>> {
    let mut y = vec![0f32; m * n];
    gemm_matmul_t_into(x, m, k, w, n, &mut y)?;
    Ok(y)
}

/// [`gemm_matmul_t`] into `y` (`m * n`; what it held is overwritten, never read).
fn gemm_matmul_t_into(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<()> {
    use super::train_kernels::gemm::{matmul, Threads, View, ViewMut};
    matmul(
        ViewMut::new(y, m, n),
        View::new(x, m, k),
        View::new(w, n, k).t(),
        false,
        1.0,
        Threads::ColumnBlocks,
    )
}

/// `x [.., in] · w[out, in]^T` into `out` (resized to rows × out; a buffer reused across calls
/// is neither zeroed nor faulted in again, which matters for outputs as wide as a
/// vocabulary). `false`, with `out` untouched, where the GEMM of [`matmul_t`] does not apply
/// (not f32 on the CPU, a gradient to record, or few enough rows for the few-row kernel): the
/// caller takes [`matmul_t`]'s tensor instead.
pub fn matmul_t_into(x: &Tensor, w: &Tensor, out: &mut Vec<f32>) -> Result<bool> {
    let Some(&inner) = x.dims().last() else {
        return Ok(false);
    };
    let rows = x.elem_count() / inner.max(1);
    if !cpu_kernels_apply(x, w, inner)? || rows <= kernels::skinny::MAX_ROWS {
        return Ok(false);
    }
    let n = w.dim(0)?;
    out.resize(rows * n, 0.0);
    kernels::with_f32(x, |xs| {
        kernels::with_f32(w, |ws| gemm_matmul_t_into(xs, rows, inner, ws, n, out))
    })???;
    Ok(true)
}

/// A low-rank adapter `delta(x) = scale * (dropout(x) A^T) B^T` (PEFT semantics).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`.
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
    /// Seed of the dropout mask (a pure function of the seed, see
    /// [`super::train_kernels::dropout`]); the trainer sets a new one for every micro-batch.
    pub dropout_seed: u64,
}

impl LoraAdapter {
    pub fn delta(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let input_dtype = x.dtype();
        let x = if train && self.dropout > 0.0 {
            let mask = super::train_kernels::dropout::mask_tensor(
                x.dims(),
                self.dropout_seed,
                self.dropout,
                x.device(),
            )?;
            x.mul(&mask.to_dtype(x.dtype())?)?
        } else {
            x.clone()
        };
        // The adapter computes in its own dtype (f32 LoRA over a bf16 base) and hands back
        // the input's dtype.
        let x = x.to_dtype(self.a.dtype())?;
        let low = matmul_t(&x, &self.a)?;
        let delta = (matmul_t(&low, &self.b)? * self.scale)?;
        delta.to_dtype(input_dtype)
    }

    /// `scale * B A`, the update of the base weight when merging.
    pub fn weight_delta(&self) -> Result<Tensor> {
        self.b.matmul(&self.a)? * self.scale
    }
}

/// One named slice of a fused projection, e.g. `k_proj` = rows 576..768 of q|k|v.
#[derive(Clone, Debug)]
pub struct Part {
    pub name: &'static str,
    pub rows: Range<usize>,
}

/// The frozen weight of a projection: a tensor, or blocks of a quantized format (QLoRA)
/// that are dequantized when a matmul needs them.
#[derive(Clone, Debug)]
pub enum ProjWeight {
    Dense(Tensor),
    Quantized {
        blocks: Arc<QuantizedWeight>,
        /// Where the dequantized values go.
        device: Device,
    },
}

impl ProjWeight {
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self {
            ProjWeight::Dense(t) => t.dims2(),
            ProjWeight::Quantized { blocks, .. } => Ok(blocks.dims()),
        }
    }

    pub fn dim(&self, d: usize) -> Result<usize> {
        let (r, c) = self.dims2()?;
        match d {
            0 => Ok(r),
            1 => Ok(c),
            _ => candle_core::bail!("a projection weight has two dimensions, not {}", d + 1),
        }
    }

    /// The values as a tensor: the tensor itself, or an f32 dequantized copy.
    pub fn tensor(&self) -> Result<Tensor> {
        match self {
            ProjWeight::Dense(t) => Ok(t.clone()),
            ProjWeight::Quantized { blocks, device } => {
                blocks.dequantize(device).map_err(candle_core::Error::wrap)
            }
        }
    }

    /// Rows `start..start + len` as a tensor (a view of a dense weight, a dequantized copy).
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Tensor> {
        match self {
            ProjWeight::Dense(t) => t.narrow(0, start, len),
            ProjWeight::Quantized { blocks, device } => blocks
                .rows_tensor(start..start + len, device)
                .map_err(candle_core::Error::wrap),
        }
    }

    /// The quantized format, when the weight is quantized.
    pub fn quantization(&self) -> Option<BaseQuantization> {
        match self {
            ProjWeight::Dense(_) => None,
            ProjWeight::Quantized { blocks, .. } => Some(blocks.format()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FusedLinear {
    /// `[sum of part outputs, in]`.
    pub weight: ProjWeight,
    pub bias: Option<Tensor>,
    pub parts: Vec<Part>,
    pub lora: Vec<Option<LoraAdapter>>,
    /// An 8-bit copy of `weight` for products of a few rows (decoding), set only on a
    /// speculative draft made by [`crate::model::Llama::with_int8_decoding`].
    pub decode_int8: Option<Arc<Int8Rows>>,
}

impl FusedLinear {
    /// Concatenates `(name, weight [out, in], bias)` parts along the output dimension.
    pub fn fuse(parts: Vec<(&'static str, Tensor, Option<Tensor>)>) -> Result<Self> {
        let mut offset = 0;
        let mut names = Vec::with_capacity(parts.len());
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        let any_bias = parts.iter().any(|p| p.2.is_some());
        for (name, w, b) in parts {
            let out = w.dim(0)?;
            names.push(Part {
                name,
                rows: offset..offset + out,
            });
            offset += out;
            if any_bias {
                biases.push(match b {
                    Some(b) => b,
                    None => Tensor::zeros(out, w.dtype(), w.device())?,
                });
            }
            weights.push(w);
        }
        let weight = if weights.len() == 1 {
            weights.remove(0)
        } else {
            Tensor::cat(&weights, 0)?
        };
        let bias = if any_bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        let lora = vec![None; names.len()];
        Ok(Self {
            weight: ProjWeight::Dense(weight),
            bias,
            parts: names,
            lora,
            decode_int8: None,
        })
    }

    /// Replaces a dense weight by its blocks in `format` (the dense tensor is dropped).
    /// `name` appears in errors.
    pub fn quantize(
        &mut self,
        format: BaseQuantization,
        name: &str,
    ) -> crate::model::error::Result<()> {
        if let ProjWeight::Dense(t) = &self.weight {
            let device = t.device().clone();
            let blocks = QuantizedWeight::from_tensor(t, format, name)?;
            self.weight = ProjWeight::Quantized {
                blocks: Arc::new(blocks),
                device,
            };
        }
        Ok(())
    }

    pub fn out_dim(&self) -> usize {
        self.parts.last().map(|p| p.rows.end).unwrap_or(0)
    }

    pub fn in_dim(&self) -> Result<usize> {
        self.weight.dim(1)
    }

    pub fn part_index(&self, name: &str) -> Option<usize> {
        self.parts.iter().position(|p| p.name == name)
    }

    /// The weight of one part, `[out, in]` (a view of a dense weight, no copy; dequantized
    /// values of a quantized one).
    pub fn part_weight(&self, i: usize) -> Result<Tensor> {
        let r = &self.parts[i].rows;
        self.weight.narrow_rows(r.start, r.len())
    }

    pub fn part_bias(&self, i: usize) -> Result<Option<Tensor>> {
        let r = &self.parts[i].rows;
        self.bias
            .as_ref()
            .map(|b| b.narrow(0, r.start, r.len()))
            .transpose()
    }

    pub fn has_lora(&self) -> bool {
        self.lora.iter().any(Option::is_some)
    }

    /// `x`: `[.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let int8 = match &self.decode_int8 {
            Some(q) => int8_matmul_t(x, q)?,
            None => None,
        };
        let base = match (int8, &self.weight) {
            (Some(y), _) => y,
            (None, ProjWeight::Dense(w)) => matmul_t(x, w)?,
            // Dequantized for this call only (the blocks stay the stored form).
            (None, quantized) => matmul_t(x, &quantized.tensor()?.to_dtype(x.dtype())?)?,
        };
        let base = match &self.bias {
            Some(b) => base.broadcast_add(b)?,
            None => base,
        };
        if !self.has_lora() {
            return Ok(base);
        }
        let mut deltas = Vec::with_capacity(self.parts.len());
        for (part, lora) in self.parts.iter().zip(&self.lora) {
            deltas.push(match lora {
                Some(l) => l.delta(x, train)?,
                None => {
                    let mut shape = x.dims().to_vec();
                    if let Some(last) = shape.last_mut() {
                        *last = part.rows.len();
                    }
                    Tensor::zeros(shape, x.dtype(), x.device())?
                }
            });
        }
        let delta = if deltas.len() == 1 {
            deltas.remove(0)
        } else {
            Tensor::cat(&deltas, D::Minus1)?
        };
        base + delta
    }

    /// Folds every adapter into the base weight and removes it. A quantized weight becomes a
    /// dense f32 one: its dequantized values plus the adapters' deltas, the model trained.
    pub fn merge_lora(&mut self) -> Result<()> {
        if !self.has_lora() {
            return Ok(());
        }
        if let ProjWeight::Quantized { .. } = self.weight {
            self.weight = ProjWeight::Dense(self.weight.tensor()?);
        }
        let mut parts = Vec::with_capacity(self.parts.len());
        for (i, lora) in self.lora.iter().enumerate() {
            let w = self.part_weight(i)?;
            parts.push(match lora {
                Some(l) => (w.to_dtype(DType::F32)? + l.weight_delta()?.to_dtype(DType::F32)?)?
                    .to_dtype(w.dtype())?,
                None => w,
            });
        }
        // Detached: the adapter's tensors are trainable variables, and an attached autograd
        // graph would keep the old weight, every part and every delta alive (measured on a
        // Llama-3.2-1B shape: 5.8 → 19.0 GB resident after the merge; 5.2 GB with detach).
        self.weight = ProjWeight::Dense(Tensor::cat(&parts, 0)?.detach());
        self.lora.iter_mut().for_each(|l| *l = None);
        Ok(())
    }
}

impl Module for FusedLinear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        FusedLinear::forward(self, xs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn every_matmul_path_matches_the_definition() {
        // Rows and widths that take each path: the few-row kernel (≤ 48 rows), the GEMM by
        // column blocks (on two threads: 96 columns as 48 + 48, 1030 as 528 + 502), a 3-D
        // input, no output columns, and candle's matmul (a recorded gradient).
        let dev = Device::Cpu;
        for (dims, n, k) in [
            (vec![5usize], 40usize, 24usize),
            (vec![201], 96, 40),
            (vec![130], 1030, 33),
            (vec![3, 70], 200, 16),
            (vec![100], 0, 8),
        ] {
            let rows: usize = dims.iter().product();
            let mut shape = dims.clone();
            shape.push(k);
            let x = Tensor::randn(0f32, 1.0, shape, &dev).expect("x");
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).expect("w");
            let got = matmul_t(&x, &w).expect("matmul");
            let mut want_shape = dims.clone();
            want_shape.push(n);
            assert_eq!(got.dims(), want_shape.as_slice());
            let xs = x
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("x data");
            let ws = w
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("w data");
            let ys = got
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("y data");
            for i in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| f64::from(xs[i * k + p]) * f64::from(ws[j * k + p]))
                        .sum();
                    let y = f64::from(ys[i * n + j]);
                    assert!(
                        (y - want).abs() < 1e-4,
                        "[{rows}x{k}]·[{n}x{k}]^T at ({i}, {j})"
                    );
                }
            }
            if n == 0 {
                continue; // nothing to compare (an empty max has no value)
            }
            let tracked = Var::from_tensor(&x).expect("var");
            let via_candle = matmul_t(tracked.as_tensor(), &w).expect("candle matmul");
            let diff = (via_candle - &got)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            assert!(diff < 1e-4, "candle's matmul differs by {diff}");
        }
    }

    #[test]
    fn merging_a_trainable_adapter_leaves_no_autograd_graph() {
        // An attached graph would keep the old weight, the parts and the deltas alive.
        let dev = Device::Cpu;
        let w = Tensor::ones((6, 4), DType::F32, &dev).unwrap();
        let mut lin = FusedLinear::fuse(vec![
            ("q_proj", w.narrow(0, 0, 4).unwrap(), None),
            ("k_proj", w.narrow(0, 4, 2).unwrap(), None),
        ])
        .unwrap();
        let a = Var::from_tensor(&Tensor::full(0.5f32, (2, 4), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::full(0.25f32, (4, 2), &dev).unwrap()).unwrap();
        lin.lora[0] = Some(LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: 2.0,
            dropout: 0.0,
            dropout_seed: 0,
        });
        lin.merge_lora().unwrap();
        let merged = lin.weight.tensor().unwrap();
        assert!(!merged.track_op(), "the merged weight carries a graph");
        assert!(!lin.has_lora());
        // q rows: 1 + 2 * (0.25 * 0.5 * 2) = 1.5; k rows unchanged.
        let v = merged.to_vec2::<f32>().unwrap();
        assert_eq!(v[0], [1.5; 4]);
        assert_eq!(v[5], [1.0; 4]);
    }
}
