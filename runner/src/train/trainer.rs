//! One optimizer step of LoRA training: forward (training kernels) over each micro-batch,
//! teacher logits on the fly when distilling, the chunked head loss on answer positions,
//! backward, gradient accumulation, global-norm clipping and the AdamW update.

use super::batching::Batch;
use super::error::{Result, TrainError};
use super::hidden::HiddenKd;
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
    /// Mean hidden-state error per answer token and layer pair (0 without hidden-state KD).
    pub hidden: f64,
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
    /// Hidden-state distillation against the teacher, besides the logits.
    pub hidden: Option<HiddenKd>,
}

/// What one micro-batch contributed: the weighted loss and the unweighted sums of its terms.
#[derive(Clone, Copy, Debug, Default)]
struct MicroLoss {
    loss: f64,
    ce: f64,
    kd: f64,
    hidden: f64,
}

pub(crate) fn head_weight(m: &Llama) -> &Tensor {
    m.lm_head.as_ref().unwrap_or(&m.embed_tokens)
}

/// Adds the gradient of each of `vars` found in `grads` into its buffer of `acc`.
pub(crate) fn add_grads(
    acc: &mut [Vec<f32>],
    grads: &candle_core::backprop::GradStore,
    vars: &[&Var],
) -> Result<()> {
    for (buf, var) in acc.iter_mut().zip(vars) {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            buf.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
    }
    Ok(())
}

/// Final-norm states of `model` at the batch's target positions, `[m, hidden]`.
pub fn states_at_targets(model: &Llama, batch: &Batch, train: bool) -> Result<Tensor> {
    Ok(forward_at_targets(model, batch, train, &[])?.0)
}

/// Final-norm states of `model` at the batch's target positions, `[m, hidden]`, and the
/// outputs of `layers` at the same positions (each `[m, hidden]`, before any norm).
pub fn forward_at_targets(
    model: &Llama,
    batch: &Batch,
    train: bool,
    layers: &[usize],
) -> Result<(Tensor, Vec<Tensor>)> {
    let device = model.device();
    let tokens = Tensor::from_slice(&batch.tokens, (batch.rows, batch.len), device)?;
    let out = model.forward(
        &tokens,
        ForwardOptions {
            hidden_states: !layers.is_empty(),
            train,
        },
    )?;
    let pos = Tensor::from_slice(&batch.positions, batch.positions.len(), device)?;
    let at_targets = |x: &Tensor| -> Result<Tensor> {
        let h = x.reshape((batch.rows * batch.len, model.config.hidden_size))?;
        Ok(h.index_select(&pos, 0)?)
    };
    let outputs = layers
        .iter()
        .map(|&l| {
            let x = out.hidden_states.get(l + 1).ok_or_else(|| {
                TrainError::Input(format!("layer {l} is beyond the model's layers"))
            })?;
            at_targets(x)
        })
        .collect::<Result<Vec<_>>>()?;
    let states = model.final_norm(&at_targets(&out.last_hidden)?, train)?;
    Ok((states, outputs))
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
            hidden: None,
        })
    }

    /// Adds hidden-state distillation; needs a teacher.
    pub fn with_hidden_kd(mut self, hidden: HiddenKd) -> Result<Self> {
        if self.teacher.is_none() {
            return Err(TrainError::Input(
                "hidden-state distillation needs a teacher model".into(),
            ));
        }
        self.hidden = Some(hidden);
        Ok(self)
    }

    /// The hidden-state term's weight per answer token and pair, for `tokens` answer tokens.
    fn hidden_scale(&self, tokens: usize) -> f64 {
        match (&self.hidden, self.teacher) {
            (Some(h), Some(_)) if !h.pairs.is_empty() => {
                h.weight / (tokens.max(1) as f64 * h.pairs.len() as f64)
            }
            _ => 0.0,
        }
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
        hidden_scale: f64,
        dropout_seed: u64,
        acc: &mut [Vec<f32>],
        times: &mut PhaseTimes,
    ) -> Result<MicroLoss> {
        self.lora.attach(self.student, dropout_seed)?;
        if self.checkpoint_layers {
            return self.micro_step_checkpointed(batch, w, hidden_scale, acc, times);
        }
        let hidden = self.hidden.clone().filter(|_| hidden_scale > 0.0);
        let (s_layers, t_layers) = match &hidden {
            Some(h) => (h.student_layers(), h.teacher_layers()),
            None => (Vec::new(), Vec::new()),
        };
        let t0 = Instant::now();
        let (states, student_outputs) = forward_at_targets(self.student, batch, true, &s_layers)?;
        times.forward += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let teacher_out = match self.teacher {
            Some(t) if w.kd > 0.0 || self.kd.is_some() => {
                Some(forward_at_targets(t, batch, false, &t_layers)?)
            }
            _ => None,
        };
        times.teacher += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let student_head = head_weight(self.student).clone();
        let hl = head_loss(
            &HeadInputs {
                student: &states,
                student_head: &student_head,
                teacher: match (self.teacher, &teacher_out) {
                    (Some(t), Some((s, _))) => Some((s, head_weight(t))),
                    _ => None,
                },
                targets: &batch.targets,
            },
            w,
            self.chunk,
        )?;
        let (total, hidden_sum) = match (&hidden, &teacher_out) {
            (Some(h), Some((_, teacher_outputs))) => {
                let e = h.error_sum(&student_outputs, teacher_outputs)?;
                let sum = e.to_scalar::<f32>()? as f64;
                ((&hl.loss + (e * hidden_scale)?)?, sum)
            }
            _ => (hl.loss.clone(), 0.0),
        };
        let loss = total.to_scalar::<f32>()? as f64;
        times.head += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        if loss.is_finite() {
            let grads = total.backward()?;
            add_grads(acc, &grads, &self.lora.vars())?;
        }
        times.backward += t0.elapsed().as_secs_f64();
        Ok(MicroLoss {
            loss,
            ce: hl.ce_sum,
            kd: hl.kd_sum,
            hidden: hidden_sum,
        })
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
        hidden_scale: f64,
        acc: &mut [Vec<f32>],
        times: &mut PhaseTimes,
    ) -> Result<MicroLoss> {
        let device = self.student.device().clone();
        let layers = self.student.num_layers();
        let hidden = self.hidden.clone().filter(|_| hidden_scale > 0.0);
        let t0 = Instant::now();
        let tokens = Tensor::from_slice(&batch.tokens, (batch.rows, batch.len), &device)?;
        let mut kept = Vec::with_capacity(layers);
        let mut x = self.student.embed(&tokens)?.detach();
        for i in 0..layers {
            kept.push(x.clone());
            x = self.student.forward_layers(&x, i..i + 1, true)?.detach();
        }
        let last = Var::from_tensor(&x)?;
        let hidden_size = self.student.config.hidden_size;
        let pos = Tensor::from_slice(&batch.positions, batch.positions.len(), &device)?;
        let at_targets = |x: &Tensor| -> Result<Tensor> {
            let h = x.reshape((batch.rows * batch.len, hidden_size))?;
            Ok(h.index_select(&pos, 0)?)
        };
        let states = self
            .student
            .final_norm(&at_targets(last.as_tensor())?, true)?;
        // The matched layers' outputs as leaves of the loss graph: the output of layer `i`
        // is the kept input of layer `i + 1`, or `last` for the last layer.
        let outputs: Vec<(usize, Var)> = match &hidden {
            Some(h) => h
                .student_layers()
                .into_iter()
                .map(|i| -> Result<(usize, Var)> {
                    let v = match kept.get(i + 1) {
                        Some(t) => Var::from_tensor(t)?,
                        None => last.clone(),
                    };
                    Ok((i, v))
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        times.forward += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let t_layers = hidden
            .as_ref()
            .map(|h| h.teacher_layers())
            .unwrap_or_default();
        let teacher_out = match self.teacher {
            Some(t) if w.kd > 0.0 || self.kd.is_some() => {
                Some(forward_at_targets(t, batch, false, &t_layers)?)
            }
            _ => None,
        };
        times.teacher += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let student_head = head_weight(self.student).clone();
        let hl = head_loss(
            &HeadInputs {
                student: &states,
                student_head: &student_head,
                teacher: match (self.teacher, &teacher_out) {
                    (Some(t), Some((s, _))) => Some((s, head_weight(t))),
                    _ => None,
                },
                targets: &batch.targets,
            },
            w,
            self.chunk,
        )?;
        let (total, hidden_sum) = match (&hidden, &teacher_out) {
            (Some(h), Some((_, teacher_outputs))) => {
                let student_outputs = outputs
                    .iter()
                    .map(|(_, v)| at_targets(v.as_tensor()))
                    .collect::<Result<Vec<_>>>()?;
                let e = h.error_sum(&student_outputs, teacher_outputs)?;
                let sum = e.to_scalar::<f32>()? as f64;
                ((&hl.loss + (e * hidden_scale)?)?, sum)
            }
            _ => (hl.loss.clone(), 0.0),
        };
        let loss = total.to_scalar::<f32>()? as f64;
        times.head += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        if loss.is_finite() {
            let grads = total.backward()?;
            let missing = || TrainError::Input("no gradient reached a layer's output".into());
            let mut grad_out = grads.get(last.as_tensor()).cloned().ok_or_else(missing)?;
            // The hidden-state term's gradient at each matched layer's output (the last
            // layer's is already in `grad_out`).
            let mut extra: Vec<Option<Tensor>> = vec![None; layers];
            for (i, v) in &outputs {
                if *i + 1 < layers {
                    extra[*i] = grads.get(v.as_tensor()).cloned();
                }
            }
            let vars = self.lora.vars();
            for i in (0..layers).rev() {
                if let Some(g) = extra[i].take() {
                    grad_out = (grad_out + g)?;
                }
                let input = Var::from_tensor(&kept[i])?;
                let y = self
                    .student
                    .forward_layers(input.as_tensor(), i..i + 1, true)?;
                let surrogate = (y * &grad_out)?.sum_all()?;
                let grads = surrogate.backward()?;
                add_grads(acc, &grads, &vars)?;
                if i > 0 {
                    grad_out = grads.get(input.as_tensor()).cloned().ok_or_else(missing)?;
                }
            }
        }
        times.backward += t0.elapsed().as_secs_f64();
        Ok(MicroLoss {
            loss,
            ce: hl.ce_sum,
            kd: hl.kd_sum,
            hidden: hidden_sum,
        })
    }

    /// Clips the accumulated gradient `acc` to `max_grad_norm`, takes the AdamW step with
    /// learning rate `lr` and writes the new values into the adapters; returns the gradient
    /// norm before clipping. `step` (0-based) names the step in errors.
    pub(crate) fn apply_gradient(
        &mut self,
        acc: &mut [Vec<f32>],
        lr: f64,
        step: u64,
    ) -> Result<f64> {
        let grad_norm = clip_global_norm(acc, self.max_grad_norm);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                what: "the gradient norm",
                value: grad_norm,
                hint: "lower the learning rate or enable clipping".into(),
            });
        }
        self.opt.update(&mut self.values, acc, lr);
        self.lora.set_values(&self.values)?;
        Ok(grad_norm)
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
        let hidden_scale = self.hidden_scale(tokens);
        let mut acc: Vec<Vec<f32>> = self.values.iter().map(|v| vec![0f32; v.len()]).collect();
        let mut times = PhaseTimes::default();
        let mut sum = MicroLoss::default();
        for (k, b) in micro.iter().enumerate() {
            let m = self.micro_step(
                b,
                w,
                hidden_scale,
                mix(dropout_seed, k as u64),
                &mut acc,
                &mut times,
            )?;
            sum.loss += m.loss;
            sum.ce += m.ce;
            sum.kd += m.kd;
            sum.hidden += m.hidden;
        }
        let (loss, ce, kd) = (sum.loss, sum.ce, sum.kd);
        let pairs = self.hidden.as_ref().map_or(1, |h| h.pairs.len().max(1));
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
        let grad_norm = self.apply_gradient(&mut acc, lr, step)?;
        times.optimizer += t0.elapsed().as_secs_f64();
        Ok(StepOutcome {
            loss,
            ce: ce / n,
            kd: kd / n,
            hidden: sum.hidden / (n * pairs as f64),
            grad_norm,
            tokens: tokens as u64,
            times,
        })
    }
}
