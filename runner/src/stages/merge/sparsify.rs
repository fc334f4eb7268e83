//! Sparsification of task vectors with mergekit's `magnitude` method (`mergekit/sparsify.py`,
//! functions `magnitude` and `rescaled_masked_tensor`), as TIES uses it.
//!
//! With `density >= 1` the tensor is kept as it is. Otherwise `k = int(density · numel)` entries
//! with the largest absolute value are kept and the rest set to 0; `k = 0` is an error, as in
//! mergekit ("not gonna zero out the whole tensor"). mergekit ranks with `torch.argsort`, whose
//! order among equal magnitudes is unspecified; here equal magnitudes keep the lower index
//! first, so the result is deterministic. TIES does not rescale the kept entries (mergekit's
//! `rescale` defaults to false for `ties`), so no rescaling is done.

/// Why a tensor cannot be sparsified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SparsifyError {
    /// `density · numel` rounds down to 0 kept entries.
    #[error(
        "density {density} keeps no entry of a tensor of {elements} elements \
         (int({density} · {elements}) = 0); raise density to at least {min_density}"
    )]
    NothingKept {
        density: f64,
        elements: usize,
        /// The smallest density that keeps one entry: `1 / elements`.
        min_density: f64,
    },
    /// A density that is not a number above 0.
    #[error("density must be greater than 0 (and at most 1), got {0}")]
    InvalidDensity(f64),
}

/// The number of entries mergekit's `magnitude` keeps: `int(density · numel)`, or all of them
/// when `density >= 1`.
pub fn kept_count(density: f64, elements: usize) -> Result<usize, SparsifyError> {
    if density.is_nan() || density <= 0.0 {
        return Err(SparsifyError::InvalidDensity(density));
    }
    if density >= 1.0 {
        return Ok(elements);
    }
    // Python's int() truncates toward zero; the product is positive here.
    let k = (density * elements as f64) as usize;
    if k == 0 {
        return Err(SparsifyError::NothingKept {
            density,
            elements,
            min_density: 1.0 / elements.max(1) as f64,
        });
    }
    Ok(k)
}

/// mergekit `magnitude(tensor, density)` without rescaling: the `k` entries of largest
/// magnitude (see [`kept_count`]) kept, the others set to 0. The values must be finite.
pub fn magnitude(tensor: &[f32], density: f64) -> Result<Vec<f32>, SparsifyError> {
    let k = kept_count(density, tensor.len())?;
    if k >= tensor.len() {
        return Ok(tensor.to_vec());
    }
    // The k-th largest magnitude: every larger entry is kept, and as many entries equal to it
    // as are needed to reach k, lowest index first.
    let mut magnitudes: Vec<f32> = tensor.iter().map(|x| x.abs()).collect();
    let (_, kth, _) = magnitudes.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *kth;
    drop(magnitudes);
    let above = tensor.iter().filter(|x| x.abs() > threshold).count();
    let mut at_threshold_left = k - above;
    let out = tensor
        .iter()
        .map(|&x| {
            let m = x.abs();
            if m > threshold {
                x
            } else if m == threshold && at_threshold_left > 0 {
                at_threshold_left -= 1;
                x
            } else {
                0.0
            }
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_exactly_k_largest_magnitudes() {
        let v = [0.1f32, -3.0, 2.0, -0.5, 0.0, 4.0, -2.5, 1.0];
        // int(0.5 · 8) = 4: |4|, |-3|, |-2.5|, |2|.
        let out = magnitude(&v, 0.5).unwrap();
        assert_eq!(out, [0.0, -3.0, 2.0, 0.0, 0.0, 4.0, -2.5, 0.0]);
        assert_eq!(out.iter().filter(|x| **x != 0.0).count(), 4);
        // int(0.3 · 8) = int(2.4) = 2: truncation, not rounding.
        let out = magnitude(&v, 0.3).unwrap();
        assert_eq!(out, [0.0, -3.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0]);
        assert_eq!(kept_count(0.3, 8), Ok(2));
        assert_eq!(kept_count(0.99, 8), Ok(7));
    }

    #[test]
    fn kept_count_matches_the_mask_for_many_sizes() {
        for n in [1usize, 2, 3, 7, 10, 33, 100, 1001] {
            let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 97) as f32 - 48.0).collect();
            for density in [0.1, 0.25, 0.5, 0.7, 0.999] {
                match kept_count(density, n) {
                    Ok(k) => {
                        let out = magnitude(&v, density).unwrap();
                        let kept = out.iter().zip(&v).filter(|(o, x)| o == x).count();
                        assert!(kept >= k, "n {n} density {density}");
                        // Every kept magnitude is at least every dropped one.
                        let min_kept = out
                            .iter()
                            .zip(&v)
                            .filter(|(o, _)| **o != 0.0)
                            .map(|(_, x)| x.abs())
                            .fold(f32::INFINITY, f32::min);
                        let max_dropped = out
                            .iter()
                            .zip(&v)
                            .filter(|(o, x)| **o == 0.0 && **x != 0.0)
                            .map(|(_, x)| x.abs())
                            .fold(0f32, f32::max);
                        assert!(min_kept >= max_dropped, "n {n} density {density}");
                    }
                    Err(e) => assert!(matches!(e, SparsifyError::NothingKept { .. })),
                }
            }
        }
    }

    #[test]
    fn equal_magnitudes_keep_the_lower_index() {
        let v = [1.0f32, -1.0, 1.0, -1.0];
        assert_eq!(magnitude(&v, 0.5).unwrap(), [1.0, -1.0, 0.0, 0.0]);
    }

    #[test]
    fn density_one_keeps_everything_and_zero_kept_is_an_error() {
        let v = [0.5f32, -0.25];
        assert_eq!(magnitude(&v, 1.0).unwrap(), v);
        let e = magnitude(&v, 0.4).unwrap_err();
        assert_eq!(
            e,
            SparsifyError::NothingKept {
                density: 0.4,
                elements: 2,
                min_density: 0.5
            }
        );
        assert!(e.to_string().contains("at least 0.5"), "{e}");
        assert!(magnitude(&v, 0.0).is_err());
        assert!(magnitude(&v, f64::NAN).is_err());
    }
}
