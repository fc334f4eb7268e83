//! Student's t distribution: the two-sided tail probability P[|T| ≥ |t|] with `df` degrees of
//! freedom, `I_{df/(df + t²)}(df/2, 1/2)`.

use super::beta::regularized_incomplete_beta;

/// Two-sided p-value of `t` with `df` > 0 degrees of freedom (NaN for df ≤ 0 or NaN t).
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    if df <= 0.0 || t.is_nan() || df.is_nan() {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    let x = df / (df + t * t);
    regularized_incomplete_beta(x, df / 2.0, 0.5).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_values() {
        // Critical values from the t table: two-sided 5 % and 1 %.
        assert!((two_sided_p(2.228, 10.0) - 0.05).abs() < 2e-4);
        assert!((two_sided_p(2.086, 20.0) - 0.05).abs() < 2e-4);
        assert!((two_sided_p(3.169, 10.0) - 0.01).abs() < 1e-4);
        assert!((two_sided_p(12.706, 1.0) - 0.05).abs() < 1e-4);
        assert!((two_sided_p(1.960, 1e6) - 0.05).abs() < 1e-4);
        // Closed forms: df = 1 (Cauchy) P[|T| ≥ 1] = 1/2; df = 2: 1 − t / sqrt(2 + t²).
        assert!((two_sided_p(1.0, 1.0) - 0.5).abs() < 1e-13);
        assert!((two_sided_p(2.0, 2.0) - (1.0 - 2.0 / 6f64.sqrt())).abs() < 1e-13);
        assert!((two_sided_p(-2.0, 2.0) - two_sided_p(2.0, 2.0)).abs() < 1e-15);
        assert_eq!(two_sided_p(0.0, 5.0), 1.0);
        assert_eq!(two_sided_p(f64::INFINITY, 5.0), 0.0);
        assert!(two_sided_p(1.0, 0.0).is_nan());
    }
}
