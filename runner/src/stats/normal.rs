//! Standard normal quantiles used for 95 % intervals and power calculations.

/// z_{0.975}: half-width of a two-sided 95 % normal interval in standard errors.
pub const Z_975: f64 = 1.959_963_984_540_054;

/// z_{0.8}: the quantile for 80 % power.
pub const Z_80: f64 = 0.841_621_233_572_914_3;
