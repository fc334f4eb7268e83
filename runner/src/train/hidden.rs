//! Hidden-state distillation (Minitron, "Compact Language Models via Pruning and Knowledge
//! Distillation", 2024, eq. for `L_is`): besides the logits, chosen student layers match the
//! outputs of the teacher layers they were cut from.
//!
//! For a student layer `i` cut from teacher layer `j` (the pruned model's `pruning.json`), at
//! every answer position `p`, the term is the normalized squared error
//! `‖h_s(i, p) − P h_t(j, p)‖² / ‖P h_t(j, p)‖²`, where `h` is the layer's output (the residual
//! stream after the layer) and `P` is the identity projection: the teacher's channels that
//! width pruning kept (all channels when the widths are equal). The loss adds
//! `weight × mean over pairs × mean over answer tokens` of it to the logit loss.

use super::error::{Result, TrainError};
use crate::stages::prune::PruningLineage;
use candle_core::{DType, Device, Tensor};

/// Keeps the denominator away from zero for an all-zero teacher state.
const EPS: f64 = 1e-6;

/// Which layers to match and how the teacher's channels map onto the student's.
#[derive(Debug, Clone)]
pub struct HiddenKd {
    /// Weight of the term in the loss.
    pub weight: f64,
    /// `(student layer, teacher layer)`, ascending by student layer.
    pub pairs: Vec<(usize, usize)>,
    /// The teacher channels the student kept (`[hidden_student]`, u32), or `None` when the
    /// widths are equal.
    pub channels: Option<Tensor>,
}

impl HiddenKd {
    /// Pairs `layers` of the student (empty: all of them) with the teacher's through
    /// `lineage`, after checking that the lineage describes this student and teacher.
    pub fn new(
        weight: f64,
        layers: &[usize],
        lineage: &PruningLineage,
        student: (usize, usize),
        teacher: (usize, usize),
        device: &Device,
    ) -> Result<Self> {
        let (s_layers, s_hidden) = student;
        let (t_layers, t_hidden) = teacher;
        let mismatch = |what: String| {
            TrainError::Input(format!(
                "hidden-state distillation cannot pair the student with the teacher: {what}; \
                 the teacher must be the model the student was pruned from"
            ))
        };
        if lineage.kept_layers.len() != s_layers {
            return Err(mismatch(format!(
                "pruning.json lists {} kept layers, the student has {s_layers}",
                lineage.kept_layers.len()
            )));
        }
        if lineage.source_layers != t_layers || lineage.source_hidden_size != t_hidden {
            return Err(mismatch(format!(
                "the student was cut from a model with {} layers and hidden size {}, the \
                 teacher has {t_layers} and {t_hidden}",
                lineage.source_layers, lineage.source_hidden_size
            )));
        }
        let kept = lineage.kept_hidden_channels.as_ref();
        if kept.map_or(t_hidden, Vec::len) != s_hidden {
            return Err(mismatch(format!(
                "pruning.json keeps {} channels, the student's hidden size is {s_hidden}",
                kept.map_or(t_hidden, Vec::len)
            )));
        }
        let chosen: Vec<usize> = if layers.is_empty() {
            (0..s_layers).collect()
        } else {
            let mut l = layers.to_vec();
            l.sort_unstable();
            l.dedup();
            l
        };
        if let Some(&bad) = chosen.iter().find(|&&l| l >= s_layers) {
            return Err(TrainError::Input(format!(
                "kd hidden layer {bad} does not exist: the student has {s_layers} layers \
                 (0..={})",
                s_layers.saturating_sub(1)
            )));
        }
        let pairs = chosen
            .into_iter()
            .map(|s| (s, lineage.kept_layers[s]))
            .collect();
        let channels = kept
            .map(|k| {
                let ids: Vec<u32> = k.iter().map(|&c| c as u32).collect();
                Tensor::from_vec(ids, k.len(), device)
            })
            .transpose()?;
        Ok(HiddenKd {
            weight,
            pairs,
            channels,
        })
    }

    /// Student layers whose outputs the term needs.
    pub fn student_layers(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.0).collect()
    }

    /// Teacher layers whose outputs the term needs.
    pub fn teacher_layers(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.1).collect()
    }

    /// Sum over pairs and positions of the normalized squared error between `student[k]`
    /// (`[m, hidden_s]`, carrying the graph) and `teacher[k]` (`[m, hidden_t]`), computed in
    /// f32: a scalar tensor.
    pub fn error_sum(&self, student: &[Tensor], teacher: &[Tensor]) -> Result<Tensor> {
        if student.len() != self.pairs.len() || teacher.len() != self.pairs.len() {
            return Err(TrainError::Input(format!(
                "hidden-state distillation expects {} layer outputs, got {} and {}",
                self.pairs.len(),
                student.len(),
                teacher.len()
            )));
        }
        let mut total: Option<Tensor> = None;
        for (s, t) in student.iter().zip(teacher) {
            let t = match &self.channels {
                Some(c) => t.index_select(c, 1)?,
                None => t.clone(),
            };
            let t = t.to_dtype(DType::F32)?.detach();
            let s = s.to_dtype(DType::F32)?;
            let num = (&s - &t)?.sqr()?.sum(1)?;
            let den = (t.sqr()?.sum(1)? + EPS)?;
            let term = (num / den)?.sum_all()?;
            total = Some(match total {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
        total.ok_or_else(|| TrainError::Input("no layer pairs to distill".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage() -> PruningLineage {
        PruningLineage::new(6, 4, &[2, 3], Some(vec![0, 2]), "")
    }

    #[test]
    fn student_layers_pair_with_the_layers_they_were_cut_from() {
        let h = HiddenKd::new(1.0, &[], &lineage(), (4, 2), (6, 4), &Device::Cpu).unwrap();
        assert_eq!(h.pairs, [(0, 0), (1, 1), (2, 4), (3, 5)]);
        let h = HiddenKd::new(1.0, &[3, 1, 3], &lineage(), (4, 2), (6, 4), &Device::Cpu).unwrap();
        assert_eq!(h.pairs, [(1, 1), (3, 5)]);
        let e = HiddenKd::new(1.0, &[4], &lineage(), (4, 2), (6, 4), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer 4 does not exist"), "{e}");
        let e = HiddenKd::new(1.0, &[], &lineage(), (4, 2), (30, 576), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pruned from"), "{e}");
    }

    #[test]
    fn the_error_is_normalized_per_position_on_the_kept_channels() {
        let h = HiddenKd::new(1.0, &[0], &lineage(), (4, 2), (6, 4), &Device::Cpu).unwrap();
        // Teacher rows [3, 9, 4, 9] and [0, 9, 2, 9]: kept channels 0 and 2 give [3, 4], [0, 2].
        let t = Tensor::new(&[[3f32, 9., 4., 9.], [0., 9., 2., 9.]], &Device::Cpu).unwrap();
        let s = Tensor::new(&[[3f32, 4.], [1., 2.]], &Device::Cpu).unwrap();
        let got = h.error_sum(&[s], &[t]).unwrap().to_scalar::<f32>().unwrap();
        // Row 1 matches exactly; row 2 is off by 1 in a norm² of 4.
        assert!((got - 0.25).abs() < 1e-5, "{got}");
    }
}
