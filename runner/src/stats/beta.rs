//! The regularized incomplete beta function I_x(a, b), by Lentz's continued fraction
//! (Numerical Recipes, `betai` / `betacf`).

use super::gamma::ln_gamma;

const MAX_ITERATIONS: usize = 300;
const EPS: f64 = 1e-15;
const TINY: f64 = 1e-300;

/// I_x(a, b) for a, b > 0 and x in [0, 1] (NaN outside the domain).
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if !(0.0..=1.0).contains(&x) || a <= 0.0 || b <= 0.0 || a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 || x == 1.0 {
        return x;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    // I_x(a, b) = 1 − I_{1−x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * continued_fraction(x, a, b) / a
    } else {
        1.0 - front * continued_fraction(1.0 - x, b, a) / b
    }
}

fn continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_ITERATIONS {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        // I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 − (1 − x)^b.
        assert!((regularized_incomplete_beta(0.3, 1.0, 1.0) - 0.3).abs() < 1e-14);
        assert!((regularized_incomplete_beta(0.4, 3.0, 1.0) - 0.064).abs() < 1e-14);
        assert!(
            (regularized_incomplete_beta(0.2, 1.0, 4.0) - (1.0 - 0.8f64.powi(4))).abs() < 1e-14
        );
        // Symmetry I_{1/2}(a, a) = 1/2.
        assert!((regularized_incomplete_beta(0.5, 7.5, 7.5) - 0.5).abs() < 1e-13);
        assert_eq!(regularized_incomplete_beta(0.0, 2.0, 3.0), 0.0);
        assert_eq!(regularized_incomplete_beta(1.0, 2.0, 3.0), 1.0);
        assert!(regularized_incomplete_beta(1.5, 2.0, 3.0).is_nan());
        // I_x(2, 3) = 6x²/2 − 8x³/3 ... polynomial: x²(6 − 8x + 3x²) at 0.7.
        let x: f64 = 0.7;
        let exact = x * x * (6.0 - 8.0 * x + 3.0 * x * x);
        assert!((regularized_incomplete_beta(x, 2.0, 3.0) - exact).abs() < 1e-13);
    }
}
