//! Agreement of two sets of logits (a reference, e.g. CPU f32, and a test, e.g. CUDA bf16):
//! the figures the device and dtype parity checks report.

use super::error::{ModelError, Result};
use candle_core::{DType, Tensor, D};

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LogitAgreement {
    /// Positions compared.
    pub positions: usize,
    /// Largest `|test - reference|`.
    pub max_abs: f32,
    /// `max_abs` over the largest `|reference|` logit.
    pub max_rel: f32,
    /// Fraction of positions whose argmax agrees.
    pub top1: f64,
    /// Mean over positions of KL(reference ‖ test) of the softmax distributions, in nats.
    pub mean_kl: f64,
}

/// Compares logits `[.., vocab]` (any dtype and device; computed in f32 on the host).
pub fn compare_logits(reference: &Tensor, test: &Tensor) -> Result<LogitAgreement> {
    if reference.dims() != test.dims() {
        return Err(ModelError::Input(format!(
            "logits of shape {:?} and {:?} cannot be compared",
            reference.dims(),
            test.dims()
        )));
    }
    let vocab = reference.dim(D::Minus1)?;
    let host = |t: &Tensor| -> Result<Vec<Vec<f32>>> {
        Ok(t.to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .reshape(((), vocab))?
            .to_vec2::<f32>()?)
    };
    let (r, t) = (host(reference)?, host(test)?);
    let mut max_abs = 0f32;
    let mut max_ref = 0f32;
    let mut agree = 0usize;
    let mut kl_sum = 0f64;
    for (a, b) in r.iter().zip(&t) {
        for (x, y) in a.iter().zip(b) {
            max_abs = max_abs.max((x - y).abs());
            max_ref = max_ref.max(x.abs());
        }
        if argmax(a) == argmax(b) {
            agree += 1;
        }
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl_sum += la
            .iter()
            .zip(&lb)
            .map(|(p, q)| p.exp() * (p - q))
            .sum::<f64>();
    }
    let n = r.len();
    Ok(LogitAgreement {
        positions: n,
        max_abs,
        max_rel: if max_ref > 0.0 {
            max_abs / max_ref
        } else {
            max_abs
        },
        top1: if n == 0 { 1.0 } else { agree as f64 / n as f64 },
        mean_kl: if n == 0 { 0.0 } else { kl_sum / n as f64 },
    })
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn log_softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let lse = v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    v.iter().map(|&x| x as f64 - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identical_logits_agree_and_different_ones_do_not() {
        let a = Tensor::new(&[[1f32, 2.0, 3.0], [0.5, -1.0, 0.0]], &Device::Cpu).unwrap();
        let s = compare_logits(&a, &a).unwrap();
        assert_eq!((s.max_abs, s.top1, s.positions), (0.0, 1.0, 2));
        assert!(s.mean_kl.abs() < 1e-12);
        let b = Tensor::new(&[[1f32, 2.0, 3.0], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        let s = compare_logits(&a, &b).unwrap();
        assert_eq!(s.top1, 0.5);
        assert!((s.max_abs - 2.0).abs() < 1e-6 && (s.max_rel - 2.0 / 3.0).abs() < 1e-6);
        assert!(s.mean_kl > 0.1, "{}", s.mean_kl);
        let c = Tensor::new(&[[1f32, 2.0]], &Device::Cpu).unwrap();
        assert!(compare_logits(&a, &c).is_err());
    }
}
