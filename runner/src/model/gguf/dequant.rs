//! Dequantization of GGUF tensors to f32 with gguf-py's arithmetic (f16 scales converted to
//! f32, then `d * q (+ m)` in f32), so the weights are bit-identical to what transformers loads.

use super::reader::{GgufFile, TensorInfo};
use crate::model::error::ModelError;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use half::{bf16, f16};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn dequant_blocks(bytes: &[u8], block: usize, out: &mut Vec<f32>, f: impl Fn(&[u8], &mut [f32])) {
    let mut buf = [0f32; 32];
    for b in bytes.chunks_exact(block) {
        f(b, &mut buf);
        out.extend_from_slice(&buf);
    }
}

/// Dequantizes `info` to f32 values in ggml order (row-major over the reversed dims).
pub fn dequantize(file: &GgufFile, info: &TensorInfo) -> Result<Vec<f32>, ModelError> {
    let bytes = file.bytes(info);
    let elems: usize = info.dims.iter().product();
    let mut out = Vec::with_capacity(elems);
    match info.ggml_type {
        0 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        1 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        30 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        // Q4_0: d (f16), 16 bytes of nibbles; x = (q - 8) d.
        2 => dequant_blocks(bytes, 18, &mut out, |b, y| {
            let d = f16_at(b, 0);
            for j in 0..16 {
                let q = b[2 + j];
                y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
                y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }),
        // Q4_1: d, m (f16), 16 bytes of nibbles; x = d q + m.
        3 => dequant_blocks(bytes, 20, &mut out, |b, y| {
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            for j in 0..16 {
                let q = b[4 + j];
                y[j] = (q & 0x0F) as f32 * d + m;
                y[j + 16] = (q >> 4) as f32 * d + m;
            }
        }),
        // Q5_0: d, 32 high bits, 16 bytes of nibbles; x = (q - 16) d.
        6 => dequant_blocks(bytes, 22, &mut out, |b, y| {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let q = b[6 + j];
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                y[j] = (((q & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
                y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }),
        // Q5_1: d, m, 32 high bits, nibbles; x = d q + m.
        7 => dequant_blocks(bytes, 24, &mut out, |b, y| {
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            for j in 0..16 {
                let q = b[8 + j];
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                y[j] = ((q & 0x0F) as u32 | h0) as f32 * d + m;
                y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
            }
        }),
        // Q8_0: d, 32 signed bytes; x = d q.
        8 => dequant_blocks(bytes, 34, &mut out, |b, y| {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = (b[2 + j] as i8) as f32 * d;
            }
        }),
        k @ (10..=14) => {
            let dtype = match k {
                10 => GgmlDType::Q2K,
                11 => GgmlDType::Q3K,
                12 => GgmlDType::Q4K,
                13 => GgmlDType::Q5K,
                _ => GgmlDType::Q6K,
            };
            // candle reads blocks in place; give it a suitably aligned copy.
            let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
            // SAFETY: `aligned` has at least `bytes.len()` bytes.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(aligned.as_mut_ptr() as *mut u8, bytes.len())
            };
            dst.copy_from_slice(bytes);
            let dims: Vec<usize> = info.dims.iter().rev().copied().collect();
            let q = qtensor_from_ggml(dtype, dst, dims, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                .map_err(|e| file.error(format!("tensor `{}`: {e}", info.name)))?;
            out = q;
        }
        other => {
            return Err(file.error(format!(
                "tensor `{}`: unsupported ggml type {other}",
                info.name
            )))
        }
    }
    if out.len() != elems {
        return Err(file.error(format!(
            "tensor `{}`: decoded {} values, expected {elems}",
            info.name,
            out.len()
        )));
    }
    Ok(out)
}
