//! The binomial distribution's lower tail, summed in log space so large counts neither
//! overflow nor underflow.

use super::gamma::ln_choose;

/// ln P[X = k] for X ~ Bin(n, p), 0 < p < 1.
pub fn ln_pmf(n: u64, k: u64, p: f64) -> f64 {
    ln_choose(n, k) + k as f64 * p.ln() + (n - k.min(n)) as f64 * (1.0 - p).ln()
}

/// ln P[X ≤ k] for X ~ Bin(n, p), 0 < p < 1 (log-sum-exp over the terms).
pub fn ln_cdf(n: u64, k: u64, p: f64) -> f64 {
    if k >= n {
        return 0.0;
    }
    let terms: Vec<f64> = (0..=k).map(|i| ln_pmf(n, i, p)).collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_coin_tails() {
        // P[X ≤ 1], X ~ Bin(10, 1/2) = 11/1024.
        assert!((ln_cdf(10, 1, 0.5).exp() - 11.0 / 1024.0).abs() < 1e-14);
        assert!((ln_pmf(4, 2, 0.5).exp() - 6.0 / 16.0).abs() < 1e-14);
        assert_eq!(ln_cdf(5, 5, 0.5), 0.0);
        // Far tail of a large count is tiny but finite in log space.
        let l = ln_cdf(100_000, 10, 0.5);
        assert!(l.is_finite() && l < -69_000.0);
    }
}
