//! Rotary position embeddings (HF `rotate_half` layout: pairs are (i, i + head_dim/2)).
//!
//! Frequencies follow transformers exactly (f32 `inv_freq`, f32 angles), including the
//! llama3 and linear scaling variants, so logits match PyTorch at the 1e-5 level.

use super::config::{ModelConfig, RopeScaling};
use std::sync::RwLock;

/// `inv_freq[i] = 1 / theta^(2i/d)` with the configured scaling, computed in f32 as transformers does.
pub fn inverse_frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let mut inv: Vec<f32> = (0..d / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / d as f32;
            1.0f32 / base.powf(exponent)
        })
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            for f in &mut inv {
                *f /= factor as f32;
            }
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            for f in &mut inv {
                let freq = *f as f64;
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let scaled = if wavelen > low_wavelen {
                    freq / factor
                } else {
                    freq
                };
                let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                let out = if medium {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                };
                *f = out as f32;
            }
        }
    }
    inv
}

/// cos/sin tables `[positions, head_dim/2]`, grown on demand.
pub struct RotaryTable {
    inv_freq: Vec<f32>,
    tables: RwLock<Tables>,
}

#[derive(Default, Clone)]
pub struct Tables {
    pub len: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RotaryTable {
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            inv_freq: inverse_frequencies(cfg),
            tables: RwLock::new(Tables::default()),
        }
    }

    /// A table without frequencies (a placeholder until the config is checked).
    pub fn empty() -> Self {
        Self {
            inv_freq: Vec::new(),
            tables: RwLock::new(Tables::default()),
        }
    }

    pub fn half_dim(&self) -> usize {
        self.inv_freq.len()
    }

    /// Runs `f` with tables covering at least `positions` positions.
    pub fn with_tables<R>(&self, positions: usize, f: impl FnOnce(&Tables) -> R) -> R {
        {
            let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
            if t.len >= positions {
                return f(&t);
            }
        }
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if t.len < positions {
            let len = positions.next_power_of_two().max(256);
            let h = self.inv_freq.len();
            let mut cos = Vec::with_capacity(len * h);
            let mut sin = Vec::with_capacity(len * h);
            for p in 0..len {
                for &f in &self.inv_freq {
                    // f32 angle as in transformers, cos/sin evaluated in f64 then rounded.
                    let angle = (p as f32 * f) as f64;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
            *t = Tables { len, cos, sin };
        }
        f(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn llama3_scaling_matches_transformers_formula() {
        let v = json!({"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":14336,
            "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
            "rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192}});
        let cfg = ModelConfig::from_json(v, "c").unwrap();
        let inv = inverse_frequencies(&cfg);
        assert_eq!(inv.len(), 64);
        // Highest frequencies are untouched, lowest are divided by the factor.
        assert_eq!(inv[0], 1.0);
        let base = 500000f32;
        let raw_last = 1.0 / base.powf(126.0 / 128.0);
        assert!((inv[63] - raw_last / 8.0).abs() < 1e-12);
    }
}
