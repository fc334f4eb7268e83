//! One optimizer step of LoRA training: forward (training kernels) over each micro-batch,
//! teacher logits on the fly when distilling, the chunked head loss on answer positions,
//! backward, gradient accumulation, global-norm clipping and the AdamW update.

use super::batching::Batch;
use super::error::{Result, TrainError};
use super::lora::LoraSet;
use super::loss::{head_loss, head_loss_composable, HeadInputs, HeadLoss, KdParams, LossWeights};
use super::optimizer::{clip_global_norm, AdamW};
use crate::model::{ForwardOptions, Llama};
use crate::util::rng::mix;
use candle_core::{Tensor, Var};
use std::time::Instant;

/// Seconds spent in each phase of a step.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PhaseTimes {
    pub forward: f64,
    pub teacher: f64,
    pub head: f64,
    pub backward: f64,
    pub optimizer: f64,
}

impl PhaseTimes {
    pub fn add(&mut self, o: &PhaseTimes) {
        self.forward += o.forward;
        self.teacher += o.teacher;
        self.head += o.head;
        self.backward += o.backward;
        self.optimizer += o.optimizer;
    }
}

/// What one optimizer step did.
#[derive(Clone, Debug)]
pub struct StepOutcome {
    /// Mean mixed loss per answer token.
    pub loss: f64,
    pub ce: f64,
    pub kd: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens: u64,
    pub times: PhaseTimes,
}

/// The trainable state and the models it trains against.
pub struct Trainer<'a> {
    pub student: &'a mut Llama,
    pub teacher: Option<&'a Llama>,
    pub lora: LoraSet,
    pub opt: AdamW,
    /// Master values of the LoRA variables (`lora.vars()` order).
    pub values: Vec<Vec<f32>>,
    pub kd: Option<KdParams>,
    pub max_grad_norm: f64,
    /// Positions per LM-head chunk.
    pub chunk: usize,
    /// Activation checkpointing per decoder layer: keep only each layer's input during the
    /// forward pass and recompute the layer in the backward pass. On by default on the
    /// device-generic path (CUDA, bf16), where candle's autograd would otherwise keep every
    /// layer's activations; the fused CPU kernels keep only what their backward needs.
    pub checkpoint_layers: bool,
}

fn head_weight(m: &Llama) -> &Tensor {
    m.lm_head.as_ref().unwrap_or(&m.embed_tokens)
}

/// Final-norm states of `model` at the batch's target positions, `[m, hidden]`.
pub fn states_at_targets(model: &Llama, batch: &Batch, train: bool) -> Result<Tensor> {
    let device = model.device();
    let tokens = Tensor::from_slice(&batch.tokens, (batch.rows, batch.len), device)?;
    let out = model.forward(
        &tokens,
        ForwardOptions {
            hidden_states: false,
            train,
        },
    )?;
    let h = out
        .last_hidden
        .reshape((batch.rows * batch.len, model.config.hidden_size))?;
    let pos = Tensor::from_slice(&batch.positions, batch.positions.len(), device)?;
    Ok(model.final_norm(&h.index_select(&pos, 0)?, train)?)
}

/// Training forward of `student` on `batch` (adapters as attached) and the head loss with
/// weights `w`; the teacher's logits enter when `teacher` is given. `composable` forces the
/// composable head (tests). Call `backward` on the returned loss for gradients.
pub fn forward_loss(
    student: &Llama,
    teacher: Option<&Llama>,
    batch: &Batch,
    w: LossWeights,
    chunk: usize,
    composable: bool,
) -> Result<HeadLoss> {
    let states = states_at_targets(student, batch, true)?;
    let teacher_states = teacher
        .map(|t| states_at_targets(t, batch, false))
        .transpose()?;
    let inputs = HeadInputs {
        student: &states,
        student_head: head_weight(student),
        teacher: match (teacher, &teacher_states) {
            (Some(t), Some(s)) => Some((s, head_weight(t))),
            _ => None,
        },
        targets: &batch.targets,
    };
    if composable {
        head_loss_composable(&inputs, w, chunk)
    } else {
        head_loss(&inputs, w, chunk)
    }
}

impl<'a> Trainer<'a> {
    pub fn new(
        student: &'a mut Llama,
        teacher: Option<&'a Llama>,
        lora: LoraSet,
        opt: AdamW,
        kd: Option<KdParams>,
        max_grad_norm: f64,
    ) -> Result<Self> {
        let values = lora.values()?;
        let checkpoint_layers = !student.fused_training();
        Ok(Self {
            checkpoint_layers,
            student,
            teacher,
            lora,
            opt,
            values,
            kd,
            max_grad_norm,
            chunk: super::loss::DEFAULT_CHUNK,
        })
    }

    /// Per-token loss weights for a step with `tokens` answer tokens.
    pub fn weights(&self, tokens: usize) -> LossWeights {
        let n = tokens.max(1) as f64;
        let (ratio, temperature) = match (&self.kd, self.teacher) {
            (Some(k), Some(_)) => (k.ratio, k.temperature),
            _ => (0.0, 1.0),
        };
        LossWeights {
            ce: ((1.0 - ratio) / n) as f32,
            kd: (ratio / n) as f32,
            temperature: temperature as f32,
        }
    }

    /// Loss and gradients of one micro-batch, gradients added into `acc`.
    fn micro_step(
        &mut self,
        batch: &Batch,
        w: LossWeights,
        dropout_seed: u64,
        acc: &mut [Vec<f32>],
        times: &mut PhaseTimes,
    ) -> Result<(f64, f64, f64)> {
        self.lora.attach(self.student, dropout_seed)?;
        if self.checkpoint_layers {
            return self.micro_step_checkpointed(batch, w, acc, times);
        }
        let t0 = Instant::now();
        let states = states_at_targets(self.student, batch, true)?;
        times.forward += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let teacher_states = match self.teacher {
            Some(t) if w.kd > 0.0 || self.kd.is_some() => Some(states_at_targets(t, batch, false)?),
            _ => None,
        };
        times.teacher += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let student_head = head_weight(self.student).clone();
        let hl = head_loss(
            &HeadInputs {
                student: &states,
                student_head: &student_head,
                teacher: match (self.teacher, &teacher_states) {
                    (Some(t), Some(s)) => Some((s, head_weight(t))),
                    _ => None,
                },
                targets: &batch.targets,
            },
            w,
            self.chunk,
        )?;
        let loss = hl.loss.to_scalar::<f32>()? as f64;
        times.head += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        if loss.is_finite() {
            let grads = hl.loss.backward()?;
            for (buf, var) in acc.iter_mut().zip(self.lora.vars()) {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let g = g.flatten_all()?.to_vec1::<f32>()?;
                    buf.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                }
            }
        }
        times.backward += t0.elapsed().as_secs_f64();
        Ok((loss, hl.ce_sum, hl.kd_sum))
    }

    /// [`Self::micro_step`] with activation checkpointing per decoder layer: the forward pass
    /// keeps only the input of every layer (detached); the head's backward gives the gradient
    /// at the last layer's output; then, from the last layer to the first, the layer is run
    /// again from its kept input and back-propagated with the incoming gradient (the
    /// surrogate `sum(y · g)`), which yields its adapters' gradients and the gradient at its
    /// input. Dropout masks are a pure function of their seed, so the recomputation sees the
    /// same masks. Peak activation memory: one layer's, plus `layers × b × t × hidden`.
    fn micro_step_checkpointed(
        &mut self,
        batch: &Batch,
        w: LossWeights,
        acc: &mut [Vec<f32>],
        times: &mut PhaseTimes,
    ) -> Result<(f64, f64, f64)> {
        let device = self.student.device().clone();
        let layers = self.student.num_layers();
        let t0 = Instant::now();
        let tokens = Tensor::from_slice(&batch.tokens, (batch.rows, batch.len), &device)?;
        let mut kept = Vec::with_capacity(layers);
        let mut x = self.student.embed(&tokens)?.detach();
        for i in 0..layers {
            kept.push(x.clone());
            x = self.student.forward_layers(&x, i..i + 1, true)?.detach();
        }
        let last = Var::from_tensor(&x)?;
        let h = last
            .as_tensor()
            .reshape((batch.rows * batch.len, self.student.config.hidden_size))?;
        let pos = Tensor::from_slice(&batch.positions, batch.positions.len(), &device)?;
        let states = self.student.final_norm(&h.index_select(&pos, 0)?, true)?;
        times.forward += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let teacher_states = match self.teacher {
            Some(t) if w.kd > 0.0 || self.kd.is_some() => Some(states_at_targets(t, batch, false)?),
            _ => None,
        };
        times.teacher += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let student_head = head_weight(self.student).clone();
        let hl = head_loss(
            &HeadInputs {
                student: &states,
                student_head: &student_head,
                teacher: match (self.teacher, &teacher_states) {
                    (Some(t), Some(s)) => Some((s, head_weight(t))),
                    _ => None,
                },
                targets: &batch.targets,
            },
            w,
            self.chunk,
        )?;
        let loss = hl.loss.to_scalar::<f32>()? as f64;
        times.head += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        if loss.is_finite() {
            let grads = hl.loss.backward()?;
            let missing = || TrainError::Input("no gradient reached a layer's output".into());
            let mut grad_out = grads.get(last.as_tensor()).cloned().ok_or_else(missing)?;
            let vars = self.lora.vars();
            for i in (0..layers).rev() {
                let input = Var::from_tensor(&kept[i])?;
                let y = self
                    .student
                    .forward_layers(input.as_tensor(), i..i + 1, true)?;
                let surrogate = (y * &grad_out)?.sum_all()?;
                let grads = surrogate.backward()?;
                for (buf, var) in acc.iter_mut().zip(&vars) {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        let g = g.flatten_all()?.to_vec1::<f32>()?;
                        buf.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                    }
                }
                if i > 0 {
                    grad_out = grads.get(input.as_tensor()).cloned().ok_or_else(missing)?;
                }
            }
        }
        times.backward += t0.elapsed().as_secs_f64();
        Ok((loss, hl.ce_sum, hl.kd_sum))
    }

    /// One optimizer step over `micro` batches with learning rate `lr`. `step` (0-based) is
    /// only used in error messages; `dropout_seed` seeds this step's dropout masks.
    pub fn step(
        &mut self,
        micro: &[Batch],
        lr: f64,
        dropout_seed: u64,
        step: u64,
    ) -> Result<StepOutcome> {
        let tokens: usize = micro.iter().map(Batch::target_count).sum();
        if tokens == 0 {
            return Err(TrainError::Input(
                "an optimizer step has no answer tokens to train on".into(),
            ));
        }
        let w = self.weights(tokens);
        let mut acc: Vec<Vec<f32>> = self.values.iter().map(|v| vec![0f32; v.len()]).collect();
        let mut times = PhaseTimes::default();
        let (mut loss, mut ce, mut kd) = (0f64, 0f64, 0f64);
        for (k, b) in micro.iter().enumerate() {
            let (l, c, d) =
                self.micro_step(b, w, mix(dropout_seed, k as u64), &mut acc, &mut times)?;
            loss += l;
            ce += c;
            kd += d;
        }
        let n = tokens as f64;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                what: "the loss",
                value: loss,
                hint: "lower the learning rate or check the data".into(),
            });
        }
        let t0 = Instant::now();
        let grad_norm = clip_global_norm(&mut acc, self.max_grad_norm);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                what: "the gradient norm",
                value: grad_norm,
                hint: "lower the learning rate or enable clipping".into(),
            });
        }
        self.opt.update(&mut self.values, &acc, lr);
        self.lora.set_values(&self.values)?;
        times.optimizer += t0.elapsed().as_secs_f64();
        Ok(StepOutcome {
            loss,
            ce: ce / n,
            kd: kd / n,
            grad_norm,
            tokens: tokens as u64,
            times,
        })
    }
}
