//! A frozen `[rows, cols]` weight kept in a block format. Blocks run along a row, so any row
//! range dequantizes on its own (a part of a fused projection, a tile of a matmul).

use super::format::FormatFacts;
use super::{nf4, BaseQuantization};
use crate::model::error::{ModelError, Result};
use candle_core::quantized::k_quants::{BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::ops::Range;

enum Blocks {
    Q8_0(Vec<BlockQ8_0>),
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q4K(Vec<BlockQ4K>),
    Nf4 { codes: Vec<u8>, absmax: Vec<f32> },
}

pub struct QuantizedWeight {
    format: BaseQuantization,
    rows: usize,
    cols: usize,
    blocks: Blocks,
}

impl std::fmt::Debug for QuantizedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedWeight")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// Rows per parallel task when quantizing or dequantizing.
const ROWS_PER_TASK: usize = 16;

fn ggml_quantize<B: GgmlType>(values: &[f32], cols: usize) -> Vec<B> {
    let per_row = cols / B::BLCK_SIZE;
    let rows = values.len() / cols;
    let mut out = vec![B::zeros(); rows * per_row];
    out.par_chunks_mut(per_row * ROWS_PER_TASK)
        .zip(values.par_chunks(cols * ROWS_PER_TASK))
        .for_each(|(blocks, values)| B::from_float(values, blocks));
    out
}

fn ggml_dequantize<B: GgmlType>(blocks: &[B], cols: usize, rows: Range<usize>, out: &mut [f32]) {
    let per_row = cols / B::BLCK_SIZE;
    let blocks = &blocks[rows.start * per_row..rows.end * per_row];
    out.par_chunks_mut(cols * ROWS_PER_TASK)
        .zip(blocks.par_chunks(per_row * ROWS_PER_TASK))
        .for_each(|(out, blocks)| B::to_float(blocks, out));
}

impl QuantizedWeight {
    /// Quantizes a row-major `[rows, cols]` matrix. `name` appears in errors.
    pub fn quantize(
        values: &[f32],
        rows: usize,
        cols: usize,
        format: BaseQuantization,
        name: &str,
    ) -> Result<Self> {
        let block = format.block_values();
        if values.len() != rows * cols {
            return Err(ModelError::Input(format!(
                "`{name}`: {} values for a [{rows}, {cols}] matrix",
                values.len()
            )));
        }
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(ModelError::Input(format!(
                "`{name}`: rows of {cols} values cannot be quantized to {format}, whose blocks \
                 hold {block} values; choose a format with smaller blocks (q8_0, q4_0, q4_1 \
                 take multiples of 32, nf4 of 64)"
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Input(format!(
                "`{name}`: value {i} is not finite ({}); a quantized base needs finite weights",
                values[i]
            )));
        }
        let blocks = match format {
            BaseQuantization::Q8_0 => Blocks::Q8_0(ggml_quantize(values, cols)),
            BaseQuantization::Q4_0 => Blocks::Q4_0(ggml_quantize(values, cols)),
            BaseQuantization::Q4_1 => Blocks::Q4_1(ggml_quantize(values, cols)),
            BaseQuantization::Q4K => Blocks::Q4K(ggml_quantize(values, cols)),
            BaseQuantization::Nf4 => {
                let n_blocks = values.len() / nf4::BLOCK;
                let mut codes = vec![0u8; values.len() / 2];
                let mut absmax = vec![0f32; n_blocks];
                let task = cols * ROWS_PER_TASK;
                codes
                    .par_chunks_mut(task / 2)
                    .zip(absmax.par_chunks_mut(task / nf4::BLOCK))
                    .zip(values.par_chunks(task))
                    .for_each(|((c, a), v)| nf4::quantize(v, c, a));
                Blocks::Nf4 { codes, absmax }
            }
        };
        Ok(Self {
            format,
            rows,
            cols,
            blocks,
        })
    }

    /// Quantizes a 2-D tensor (any float dtype, any device; read back as f32).
    pub fn from_tensor(t: &Tensor, format: BaseQuantization, name: &str) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        let values = t
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::quantize(&values, rows, cols, format, name)
    }

    pub fn format(&self) -> BaseQuantization {
        self.format
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes the blocks take in memory.
    pub fn storage_bytes(&self) -> usize {
        self.rows * self.cols / self.format.block_values() * self.format.block_bytes()
    }

    /// Dequantizes rows `rows` into `out` (`rows.len() * cols` values, row-major).
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        if rows.start > rows.end || rows.end > self.rows || out.len() != rows.len() * self.cols {
            return Err(ModelError::Input(format!(
                "dequantize rows {rows:?} of a [{}, {}] weight into {} values",
                self.rows,
                self.cols,
                out.len()
            )));
        }
        let cols = self.cols;
        match &self.blocks {
            Blocks::Q8_0(b) => ggml_dequantize(b, cols, rows, out),
            Blocks::Q4_0(b) => ggml_dequantize(b, cols, rows, out),
            Blocks::Q4_1(b) => ggml_dequantize(b, cols, rows, out),
            Blocks::Q4K(b) => ggml_dequantize(b, cols, rows, out),
            Blocks::Nf4 { codes, absmax } => {
                let per_row = cols / nf4::BLOCK;
                let codes = &codes[rows.start * cols / 2..rows.end * cols / 2];
                let absmax = &absmax[rows.start * per_row..rows.end * per_row];
                let task = cols * ROWS_PER_TASK;
                out.par_chunks_mut(task)
                    .zip(codes.par_chunks(task / 2))
                    .zip(absmax.par_chunks(task / nf4::BLOCK))
                    .for_each(|((o, c), a)| nf4::dequantize(c, a, o));
            }
        }
        Ok(())
    }

    /// Rows `rows` as an f32 tensor on `device`.
    pub fn rows_tensor(&self, rows: Range<usize>, device: &Device) -> Result<Tensor> {
        let n = rows.len();
        let mut out = vec![0f32; n * self.cols];
        self.dequantize_rows(rows, &mut out)?;
        Ok(Tensor::from_vec(out, (n, self.cols), device)?)
    }

    /// The whole weight as an f32 tensor on `device`.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        self.rows_tensor(0..self.rows, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::SplitMix64;

    fn normal_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..rows * cols)
            .map(|_| {
                // Box-Muller from two uniforms.
                let u1 = rng.next_f64().max(1e-12);
                let u2 = rng.next_f64();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.02) as f32
            })
            .collect()
    }

    /// Largest error per value allowed by each format's rounding, relative to its block's
    /// absolute maximum: half a step of the grid, plus the f16 rounding of the scale (up to
    /// 2^-11 of it, times the largest code) where the format stores one (Q4_K: its 6-bit
    /// sub-block scales add more).
    fn bound(format: BaseQuantization) -> f32 {
        const F16: f32 = 1.0 / 2048.0;
        match format {
            BaseQuantization::Q8_0 => (0.5 + 127.0 * F16) / 127.0,
            // d = max / -8 with `max` the signed extreme: a value of the other sign at
            // +|max| clamps to 7 d, an error of d = |max| / 8.
            BaseQuantization::Q4_0 => (1.0 + 8.0 * F16) / 8.0,
            // d = (max - min) / 15 ≤ 2 amax / 15, and the f16 minimum rounds too.
            BaseQuantization::Q4_1 => (0.5 + 15.0 * F16) * 2.0 / 15.0 + F16,
            BaseQuantization::Q4K => 0.5 / 15.0 * 2.0 * 1.5,
            // Half the widest gap of the code book (between -1 and -0.696).
            BaseQuantization::Nf4 => 0.5 * (nf4::CODE[1] - nf4::CODE[0]),
        }
    }

    #[test]
    fn every_format_round_trips_within_its_rounding_bound() {
        let (rows, cols) = (40, 512);
        let w = normal_matrix(rows, cols, 3);
        for format in BaseQuantization::ALL {
            let q = QuantizedWeight::quantize(&w, rows, cols, format, "w").unwrap();
            assert_eq!(
                q.storage_bytes() as f64 * 8.0,
                (rows * cols) as f64 * format.bits_per_weight()
            );
            let mut back = vec![0f32; rows * cols];
            q.dequantize_rows(0..rows, &mut back).unwrap();
            let block = format.block_values();
            let mut worst = 0f32;
            for (orig, deq) in w.chunks(block).zip(back.chunks(block)) {
                let amax = orig.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in orig.iter().zip(deq) {
                    worst = worst.max((a - b).abs() / amax);
                }
            }
            assert!(
                worst <= bound(format) * 1.001,
                "{format}: worst error {worst} of the block absmax, bound {}",
                bound(format)
            );
            // A row range dequantizes to the same values as the whole matrix.
            let mut part = vec![0f32; 7 * cols];
            q.dequantize_rows(11..18, &mut part).unwrap();
            assert_eq!(part, back[11 * cols..18 * cols]);
        }
    }

    #[test]
    fn bad_shapes_and_values_are_refused_with_what_to_change() {
        let w = vec![0.5f32; 4 * 96];
        let e = QuantizedWeight::quantize(&w, 4, 96, BaseQuantization::Q4K, "model.x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("256") && e.contains("model.x"), "{e}");
        let e = QuantizedWeight::quantize(&w, 4, 96, BaseQuantization::Nf4, "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64"), "{e}");
        let mut bad = vec![0.5f32; 4 * 64];
        bad[9] = f32::NAN;
        let e = QuantizedWeight::quantize(&bad, 4, 64, BaseQuantization::Nf4, "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("value 9"), "{e}");
        let q =
            QuantizedWeight::quantize(&w[..4 * 64], 4, 64, BaseQuantization::Q8_0, "w").unwrap();
        assert!(q.dequantize_rows(3..5, &mut vec![0f32; 128]).is_err());
    }
}
