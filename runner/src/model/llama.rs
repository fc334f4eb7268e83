//! The Llama-family causal LM: embeddings, a cuttable list of decoder layers, final norm and
//! LM head. Exposes hidden states after every layer, right-padded batches, a KV cache, and
//! LoRA hooks on every projection.

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::kernels;
use super::kernels::skinny_int8::Int8Rows;
use super::kv_buffer::KvBuffer;
use super::kv_cache::{KvCache, RaggedCache};
use super::layer::{AttnIo, DecoderLayer, ModelObserver, Observer, Site};
use super::linear::{
    int8_copy, int8_matmul_t, matmul_t, matmul_t_into, FusedLinear, LoraAdapter, ProjWeight,
};
use super::ops;
use super::quant::BaseQuantization;
use super::rope::RotaryTable;
use super::train_kernels;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// The seven projection names of a decoder layer, in HF naming.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

pub struct Llama {
    pub config: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: Tensor,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Tensor>,
    /// An 8-bit copy of the LM head for few-row products (a speculative draft only).
    pub lm_head_int8: Option<Arc<Int8Rows>>,
    /// Use the fused CPU training kernels ([`super::train_kernels`]) for `train: true` on CPU
    /// f32 (default); `false` forces the composable ops (tests compare the two).
    pub train_kernels: bool,
    /// Use the fused CPU inference kernels ([`super::kernels`]) on CPU f32 (default); `false`
    /// forces the device-generic candle ops, the path every other device and dtype takes
    /// (tests compare the two).
    pub fused_kernels: bool,
    rope: RotaryTable,
    device: Device,
}

/// The quantized projections of a model (QLoRA).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizedBase {
    pub format: Option<BaseQuantization>,
    /// Weights held quantized.
    pub weights: usize,
    /// Bytes their blocks take (the f32 weights would take `4 * weights`).
    pub bytes: usize,
}

/// What a full-sequence forward pass returns.
pub struct ForwardOutput {
    /// Output of the last layer, before the final norm: `[b, t, hidden]`.
    pub last_hidden: Tensor,
    /// `h_0` (embeddings) … `h_L` (= `last_hidden`) when requested, else empty.
    pub hidden_states: Vec<Tensor>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions {
    /// Keep the hidden state entering every layer and the last layer's output.
    pub hidden_states: bool,
    /// Training mode: composable ops (autograd) and LoRA dropout.
    pub train: bool,
}

/// Fetches a weight by its HF name.
pub trait WeightSource {
    fn tensor(&mut self, name: &str) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
}

/// Weights already in memory, by HF name (each taken once).
impl WeightSource for std::collections::HashMap<String, Tensor> {
    fn tensor(&mut self, name: &str) -> Result<Tensor> {
        self.remove(name).ok_or_else(|| ModelError::Tensor {
            file: "weights in memory".into(),
            name: name.into(),
            reason: "missing".into(),
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

impl Llama {
    /// Builds the model from HF-named weights.
    pub fn load(
        config: ModelConfig,
        weights: &mut dyn WeightSource,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with_base(config, weights, device, None)
    }

    /// [`Llama::load`] with the projections of every layer quantized to `base` as soon as the
    /// layer is read (QLoRA): the dense weights of one layer at a time are in memory, never
    /// the whole model's.
    pub fn load_with_base(
        config: ModelConfig,
        weights: &mut dyn WeightSource,
        device: &Device,
        base: Option<BaseQuantization>,
    ) -> Result<Self> {
        // No capacity from the config: a hostile layer count fails at its first missing layer,
        // not in a huge allocation.
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut w = |n: &str| weights.tensor(&format!("{p}.{n}"));
            let input_layernorm = w("input_layernorm.weight")?;
            let post_attention_layernorm = w("post_attention_layernorm.weight")?;
            let mut proj = |group: &str,
                            name: &'static str,
                            bias: bool|
             -> Result<(&'static str, Tensor, Option<Tensor>)> {
                let weight = w(&format!("{group}.{name}.weight"))?;
                let b = if bias {
                    Some(w(&format!("{group}.{name}.bias"))?)
                } else {
                    None
                };
                Ok((name, weight, b))
            };
            let qkv = FusedLinear::fuse(vec![
                proj("self_attn", "q_proj", config.qkv_bias)?,
                proj("self_attn", "k_proj", config.qkv_bias)?,
                proj("self_attn", "v_proj", config.qkv_bias)?,
            ])?;
            let o_proj = FusedLinear::fuse(vec![proj("self_attn", "o_proj", config.o_bias)?])?;
            let gate_up = FusedLinear::fuse(vec![
                proj("mlp", "gate_proj", config.mlp_bias)?,
                proj("mlp", "up_proj", config.mlp_bias)?,
            ])?;
            let down_proj = FusedLinear::fuse(vec![proj("mlp", "down_proj", config.mlp_bias)?])?;
            let mut layer = DecoderLayer {
                input_layernorm,
                post_attention_layernorm,
                qkv,
                o_proj,
                gate_up,
                down_proj,
            };
            if let Some(format) = base {
                layer.quantize_projections(format, &p)?;
            }
            layers.push(layer);
        }
        let embed_tokens = weights.tensor("model.embed_tokens.weight")?;
        let norm = weights.tensor("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else if weights.contains("lm_head.weight") {
            Some(weights.tensor("lm_head.weight")?)
        } else {
            return Err(ModelError::Input(
                "config has tie_word_embeddings = false but the weights have no `lm_head.weight`"
                    .into(),
            ));
        };
        let mut model = Self {
            // Built once the shapes are checked: its size follows the config's head_dim.
            rope: RotaryTable::empty(),
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            lm_head_int8: None,
            train_kernels: true,
            fused_kernels: true,
            device: device.clone(),
        };
        model.check_shapes()?;
        model.rope = RotaryTable::new(&model.config);
        Ok(model)
    }

    fn check_shapes(&self) -> Result<()> {
        let c = &self.config;
        let expect_dims = |name: String, got: &[usize], dims: &[usize]| -> Result<()> {
            if got != dims {
                return Err(ModelError::Tensor {
                    file: "weights".into(),
                    name,
                    reason: format!("shape {got:?} does not match the config (expected {dims:?})"),
                });
            }
            Ok(())
        };
        let expect = |name: String, t: &Tensor, dims: &[usize]| expect_dims(name, t.dims(), dims);
        let expect_proj = |name: String, w: &ProjWeight, dims: &[usize]| -> Result<()> {
            let (r, c) = w.dims2()?;
            expect_dims(name, &[r, c], dims)
        };
        expect(
            "model.embed_tokens.weight".into(),
            &self.embed_tokens,
            &[c.vocab_size, c.hidden_size],
        )?;
        expect("model.norm.weight".into(), &self.norm, &[c.hidden_size])?;
        if let Some(h) = &self.lm_head {
            expect("lm_head.weight".into(), h, &[c.vocab_size, c.hidden_size])?;
        }
        let qkv_out = c.q_dim() + 2 * c.kv_dim();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            expect_proj(
                format!("{p}.self_attn.q|k|v_proj.weight"),
                &l.qkv.weight,
                &[qkv_out, c.hidden_size],
            )?;
            expect_proj(
                format!("{p}.self_attn.o_proj.weight"),
                &l.o_proj.weight,
                &[c.hidden_size, c.q_dim()],
            )?;
            expect_proj(
                format!("{p}.mlp.gate|up_proj.weight"),
                &l.gate_up.weight,
                &[2 * c.intermediate_size, c.hidden_size],
            )?;
            expect_proj(
                format!("{p}.mlp.down_proj.weight"),
                &l.down_proj.weight,
                &[c.hidden_size, c.intermediate_size],
            )?;
            expect(
                format!("{p}.input_layernorm.weight"),
                &l.input_layernorm,
                &[c.hidden_size],
            )?;
        }
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Removes layers `start..start + n` and renumbers the rest (depth pruning).
    pub fn remove_layers(&mut self, start: usize, n: usize) -> Result<()> {
        let total = self.layers.len();
        if n == 0 || start + n > total || n >= total {
            return Err(ModelError::Input(format!(
                "cannot remove layers {start}..{} from a model with {total} layers",
                start + n
            )));
        }
        self.layers.drain(start..start + n);
        self.config.num_hidden_layers = self.layers.len();
        Ok(())
    }

    /// The token embeddings `[b, t, hidden]` of `tokens` `[b, t]`.
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let ids = tokens.flatten_all()?.to_device(&self.device)?;
        Ok(self
            .embed_tokens
            .index_select(&ids, 0)?
            .reshape((b, t, self.config.hidden_size))?)
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<()> {
        let max = tokens
            .flatten_all()?
            .to_dtype(DType::U32)?
            .max(0)?
            .to_scalar::<u32>()?;
        if max as usize >= self.config.vocab_size {
            return Err(ModelError::Input(format!(
                "token id {max} is outside the vocabulary ({} tokens)",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    fn use_fused(&self, train: bool) -> bool {
        !train && self.fused_kernels && kernels::usable(&self.embed_tokens)
    }

    /// Whether training runs the fused CPU training kernels (CPU f32), rather than the
    /// device-generic candle ops.
    pub fn fused_training(&self) -> bool {
        self.use_train_kernels(true)
    }

    fn use_train_kernels(&self, train: bool) -> bool {
        train && self.train_kernels && train_kernels::usable(&self.embed_tokens)
    }

    /// cos/sin of positions `0..t` for the training kernels.
    fn train_rope(&self, t: usize) -> train_kernels::attention::RopeTables {
        let half = self.rope.half_dim();
        let (cos, sin) = self.rope.with_tables(t, |tab| {
            (tab.cos[..t * half].to_vec(), tab.sin[..t * half].to_vec())
        });
        train_kernels::attention::RopeTables {
            cos: cos.into(),
            sin: sin.into(),
            positions: t,
        }
    }

    /// cos/sin `[b, t, d/2]` for positions `starts[r] + 0..t`.
    fn rope_tensors(&self, starts: &[usize], t: usize) -> Result<(Tensor, Tensor)> {
        let max = starts.iter().max().copied().unwrap_or(0) + t;
        let half = self.rope.half_dim();
        let (cos, sin) = self.rope.with_tables(max, |tab| {
            let mut cos = Vec::with_capacity(starts.len() * t * half);
            let mut sin = Vec::with_capacity(starts.len() * t * half);
            for &s in starts {
                cos.extend_from_slice(&tab.cos[s * half..(s + t) * half]);
                sin.extend_from_slice(&tab.sin[s * half..(s + t) * half]);
            }
            (cos, sin)
        });
        let shape = (starts.len(), t, half);
        Ok((
            Tensor::from_vec(cos, shape, &self.device)?,
            Tensor::from_vec(sin, shape, &self.device)?,
        ))
    }

    /// Full-sequence forward (no cache). `tokens`: `[b, t]` u32, right-padded batches are fine
    /// (attention is causal, so padding never influences real positions).
    pub fn forward(&self, tokens: &Tensor, opts: ForwardOptions) -> Result<ForwardOutput> {
        self.forward_observed(tokens, opts, None)
    }

    /// [`Llama::forward`] that also hands the activations inside every layer (`Site`) to
    /// `observer` with the layer's index. Inference only: an observer with `opts.train` is an
    /// error.
    pub fn forward_observed(
        &self,
        tokens: &Tensor,
        opts: ForwardOptions,
        mut observer: Option<ModelObserver<'_>>,
    ) -> Result<ForwardOutput> {
        if observer.is_some() && opts.train {
            return Err(ModelError::Input(
                "activations can be observed in inference passes only".into(),
            ));
        }
        self.check_tokens(tokens)?;
        let (b, t) = tokens.dims2()?;
        let mut x = self.embed(tokens)?;
        let mut hidden_states = Vec::new();
        let starts = vec![0usize; b];
        if self.use_fused(opts.train) {
            let c = &self.config;
            let mut kv = KvBuffer::new(b, c.num_key_value_heads, t, c.head_dim);
            let rows: Vec<usize> = (0..b).collect();
            let lens = vec![t; b];
            x = self.rope.with_tables(t, |tab| -> Result<Tensor> {
                for (i, layer) in self.layers.iter().enumerate() {
                    if opts.hidden_states {
                        hidden_states.push(x.clone());
                    }
                    let io = AttnIo::Fused {
                        kv: &mut kv,
                        lens: &lens,
                        rows: &rows,
                        starts: &starts,
                        cos: &tab.cos,
                        sin: &tab.sin,
                    };
                    let mut at_layer = observer
                        .as_mut()
                        .map(|f| move |site: Site, a: &Tensor| f(i, site, a));
                    let obs = at_layer.as_mut().map(|f| f as Observer<'_>);
                    x = layer.forward_observed(&x, c, io, false, obs)?;
                }
                Ok(x)
            })?;
        } else if self.use_train_kernels(opts.train) {
            let rope = self.train_rope(t);
            // Composable fallback for layers whose adapters the kernel does not cover.
            let mut generic: Option<(Tensor, Tensor, Tensor)> = None;
            for layer in &self.layers {
                if opts.hidden_states {
                    hidden_states.push(x.clone());
                }
                x = match layer.forward_train(&x, &self.config, &rope)? {
                    Some(y) => y,
                    None => {
                        if generic.is_none() {
                            let (cos, sin) = self.rope_tensors(&starts, t)?;
                            let mask = ops::causal_mask(&starts, t, t, &self.device)?;
                            generic = Some((cos, sin, mask));
                        }
                        let (cos, sin, mask) = generic.as_ref().ok_or_else(|| {
                            ModelError::Input("rotary tables for the composable path".into())
                        })?;
                        let io = AttnIo::Generic {
                            cos,
                            sin,
                            mask,
                            past: None,
                        };
                        layer.forward(&x, &self.config, io, true)?
                    }
                };
            }
        } else {
            let (cos, sin) = self.rope_tensors(&starts, t)?;
            let mask = ops::causal_mask(&starts, t, t, &self.device)?;
            for (i, layer) in self.layers.iter().enumerate() {
                if opts.hidden_states {
                    hidden_states.push(x.clone());
                }
                let io = AttnIo::Generic {
                    cos: &cos,
                    sin: &sin,
                    mask: &mask,
                    past: None,
                };
                let mut at_layer = observer
                    .as_mut()
                    .map(|f| move |site: Site, a: &Tensor| f(i, site, a));
                let obs = at_layer.as_mut().map(|f| f as Observer<'_>);
                x = layer.forward_observed(&x, &self.config, io, opts.train, obs)?;
            }
        }
        if opts.hidden_states {
            hidden_states.push(x.clone());
        }
        Ok(ForwardOutput {
            last_hidden: x,
            hidden_states,
        })
    }

    /// Runs only the decoder layers `layers` on hidden states `x` `[b, t, hidden]` at
    /// positions `0..t` (no cache): a forward pass restarted from a hidden state kept by
    /// [`Llama::forward`] with `hidden_states` (e.g. the tail of the model after a removed
    /// block starts from `h_l` with layers `l + n..L`). An empty range returns `x`.
    pub fn forward_layers(
        &self,
        x: &Tensor,
        layers: std::ops::Range<usize>,
        train: bool,
    ) -> Result<Tensor> {
        if layers.start > layers.end || layers.end > self.layers.len() {
            return Err(ModelError::Input(format!(
                "layer range {}..{} is outside the model's {} layers",
                layers.start,
                layers.end,
                self.layers.len()
            )));
        }
        let (b, t, h) = x.dims3()?;
        if h != self.config.hidden_size {
            return Err(ModelError::Input(format!(
                "hidden states have width {h}, the model {}",
                self.config.hidden_size
            )));
        }
        let mut x = x.clone();
        let starts = vec![0usize; b];
        if self.use_fused(train) {
            let c = &self.config;
            let mut kv = KvBuffer::new(b, c.num_key_value_heads, t, c.head_dim);
            let rows: Vec<usize> = (0..b).collect();
            let lens = vec![t; b];
            let x = x.contiguous()?;
            return self.rope.with_tables(t, |tab| -> Result<Tensor> {
                let mut x = x;
                for layer in &self.layers[layers] {
                    let io = AttnIo::Fused {
                        kv: &mut kv,
                        lens: &lens,
                        rows: &rows,
                        starts: &starts,
                        cos: &tab.cos,
                        sin: &tab.sin,
                    };
                    x = layer.forward(&x, c, io, false)?;
                }
                Ok(x)
            });
        }
        let (cos, sin) = self.rope_tensors(&starts, t)?;
        let mask = ops::causal_mask(&starts, t, t, &self.device)?;
        for layer in &self.layers[layers] {
            let io = AttnIo::Generic {
                cos: &cos,
                sin: &sin,
                mask: &mask,
                past: None,
            };
            x = layer.forward(&x, &self.config, io, train)?;
        }
        Ok(x)
    }

    /// Whether [`Llama::new_cache`] gives a ragged cache (rows of different lengths, refilled
    /// one by one: the fused CPU path) rather than one whose rows advance together.
    pub fn ragged_cache(&self) -> bool {
        self.use_fused(false)
    }

    /// A cache sized for `rows` sequences on this model's device.
    pub fn new_cache(&self, rows: usize, capacity: usize) -> KvCache {
        let c = &self.config;
        if self.use_fused(false) {
            KvCache::ragged(
                self.layers.len(),
                rows,
                c.num_key_value_heads,
                capacity,
                c.head_dim,
            )
        } else {
            KvCache::tensors(self.layers.len(), rows)
        }
    }

    /// Incremental forward: batch row `b` continues cache row `rows[b]` at its current length.
    /// Returns the last layer's output `[b, t, hidden]` (before the final norm).
    pub fn forward_cached(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        rows: &[usize],
    ) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        let (b, t) = tokens.dims2()?;
        if rows.len() != b {
            return Err(ModelError::Input(format!(
                "{} cache rows for a batch of {b}",
                rows.len()
            )));
        }
        let starts = self.cache_starts(cache, rows, t)?;
        match cache {
            KvCache::Ragged(rc) => {
                let lens = vec![t; b];
                let x = self.embed(&tokens.reshape((1, b * t))?)?;
                let h = self.forward_ragged(x, rc, rows, &starts, &lens)?;
                Ok(h.reshape((b, t, self.config.hidden_size))?)
            }
            KvCache::Tensors(tc) => {
                let all_rows: Vec<usize> = (0..tc.rows).collect();
                if rows != all_rows.as_slice() {
                    return Err(ModelError::Input(
                        "this device's KV cache advances all rows together; pass every row in order".into(),
                    ));
                }
                let mut x = self.embed(tokens)?;
                let (cos, sin) = self.rope_tensors(&starts, t)?;
                let mask = ops::causal_mask(&starts, t, tc.len + t, &self.device)?;
                for (layer, past) in self.layers.iter().zip(tc.layers.iter_mut()) {
                    let io = AttnIo::Generic {
                        cos: &cos,
                        sin: &sin,
                        mask: &mask,
                        past: Some(past),
                    };
                    x = layer.forward(&x, &self.config, io, false)?;
                }
                tc.len += t;
                Ok(x)
            }
        }
    }

    /// Incremental forward of a packed batch, without padding: `tokens` holds the batch rows
    /// one after another, row `b` with `lens[b]` tokens continuing cache row `rows[b]` at its
    /// current length. Returns the last layer's output `[Σ lens, hidden]` (before the final
    /// norm), in the same order. Needs the ragged cache of the fused CPU path
    /// ([`Llama::ragged_cache`]); other devices run right-padded batches through
    /// [`Llama::forward_cached`].
    pub fn forward_cached_packed(
        &self,
        tokens: &[u32],
        lens: &[usize],
        cache: &mut KvCache,
        rows: &[usize],
    ) -> Result<Tensor> {
        let total: usize = lens.iter().sum();
        if total != tokens.len() || rows.len() != lens.len() {
            return Err(ModelError::Input(format!(
                "packed batch: {} tokens and {} cache rows for {} rows of {total} tokens",
                tokens.len(),
                rows.len(),
                lens.len()
            )));
        }
        if total == 0 {
            return Err(ModelError::Input("packed batch without tokens".into()));
        }
        let tokens = Tensor::from_slice(tokens, (1, total), &self.device)?;
        self.check_tokens(&tokens)?;
        let longest = lens.iter().copied().max().unwrap_or(0);
        let starts = self.cache_starts(cache, rows, longest)?;
        let KvCache::Ragged(rc) = cache else {
            return Err(ModelError::Input(
                "packed batches need the ragged KV cache of the CPU path; run right-padded \
                 batches through forward_cached on this device"
                    .into(),
            ));
        };
        let x = self.embed(&tokens)?;
        let h = self.forward_ragged(x, rc, rows, &starts, lens)?;
        Ok(h.reshape((total, self.config.hidden_size))?)
    }

    /// Where each batch row starts in its cache row; checks the rows (in range, distinct) and
    /// that `starts + tokens` stays within the model's positions.
    fn cache_starts(&self, cache: &KvCache, rows: &[usize], tokens: usize) -> Result<Vec<usize>> {
        let mut seen = vec![false; cache.rows()];
        for &r in rows {
            if r >= cache.rows() || std::mem::replace(&mut seen[r], true) {
                return Err(ModelError::Input(format!(
                    "cache row {r} is out of range or repeated"
                )));
            }
        }
        let starts: Vec<usize> = rows.iter().map(|&r| cache.len(r)).collect();
        let max_len = starts.iter().max().copied().unwrap_or(0) + tokens;
        if max_len > self.config.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "sequence of {max_len} tokens exceeds max_position_embeddings ({})",
                self.config.max_position_embeddings
            )));
        }
        Ok(starts)
    }

    /// The layers over `x` (`[1, Σ lens, hidden]`, rows packed) on the ragged cache; advances
    /// every row's length.
    fn forward_ragged(
        &self,
        mut x: Tensor,
        rc: &mut RaggedCache,
        rows: &[usize],
        starts: &[usize],
        lens: &[usize],
    ) -> Result<Tensor> {
        let c = &self.config;
        let max_len = starts
            .iter()
            .zip(lens)
            .map(|(s, l)| s + l)
            .max()
            .unwrap_or(0);
        for layer_kv in &mut rc.layers {
            layer_kv.reserve(max_len);
        }
        x = self.rope.with_tables(max_len, |tab| -> Result<Tensor> {
            for (layer, kv) in self.layers.iter().zip(rc.layers.iter_mut()) {
                let io = AttnIo::Fused {
                    kv,
                    lens,
                    rows,
                    starts,
                    cos: &tab.cos,
                    sin: &tab.sin,
                };
                x = layer.forward(&x, c, io, false)?;
            }
            Ok(x)
        })?;
        for ((&r, &s), &len) in rows.iter().zip(starts).zip(lens) {
            rc.lens[r] = s + len;
        }
        Ok(x)
    }

    /// Final RMSNorm.
    pub fn final_norm(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        Ok(if self.use_fused(train) {
            kernels::rms_norm::rms_norm(h, &self.norm, eps as f32)?
        } else if self.use_train_kernels(train) {
            train_kernels::rms_norm::rms_norm(h, &self.norm, eps)?
        } else if train {
            ops::rms_norm(h, &self.norm, eps)?
        } else {
            ops::rms_norm_infer(h, &self.norm, eps)?
        })
    }

    /// LM head on already-normalised states: `[.., hidden]` → `[.., vocab]`, always f32 (the
    /// GEMM runs in the model's dtype with f32 accumulation, as transformers does; logits and
    /// losses are taken in f32).
    pub fn lm_head(&self, normed: &Tensor) -> Result<Tensor> {
        if let Some(q) = &self.lm_head_int8 {
            if let Some(y) = int8_matmul_t(normed, q)? {
                return Ok(y);
            }
        }
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        Ok(matmul_t(normed, w)?.to_dtype(DType::F32)?)
    }

    /// [`Llama::lm_head`] into `out` (`[rows, vocab]` row-major, resized; a buffer reused
    /// across calls is not zeroed or faulted in again). `false`, with `out` untouched, where
    /// the CPU GEMM does not apply ([`super::linear::matmul_t_into`]) or the head is 8-bit:
    /// take [`Llama::lm_head`]'s tensor instead.
    pub fn lm_head_into(&self, normed: &Tensor, out: &mut Vec<f32>) -> Result<bool> {
        if self.lm_head_int8.is_some() {
            return Ok(false);
        }
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        Ok(matmul_t_into(normed, w, out)?)
    }

    /// A speculative draft for this model that shares its weights and decodes with 8-bit
    /// copies of the projections and the LM head (one f32 scale per 32 values, 1.125 bytes a
    /// weight): a few rows read under a third of the bytes, and the copy predicts this
    /// model's next token almost always. Prompts (more rows than
    /// [`super::kernels::skinny_int8::MAX_ROWS`]) run on the shared f32 weights. Needs dense
    /// f32 weights on the CPU whose rows split into blocks of 32.
    pub fn with_int8_decoding(&self) -> Result<Llama> {
        if !self.device.is_cpu() || self.dtype() != DType::F32 {
            return Err(ModelError::Input(format!(
                "an 8-bit draft needs an f32 model on the CPU, not {:?} on {:?}",
                self.dtype(),
                self.device
            )));
        }
        let copy = |w: &Tensor, name: &str| -> Result<Arc<Int8Rows>> {
            int8_copy(w)?.ok_or_else(|| {
                ModelError::Input(format!(
                    "`{name}` cannot be copied to 8 bits: its rows must be a multiple of 32 \
                     values long"
                ))
            })
        };
        let mut layers = self.layers.clone();
        for (i, layer) in layers.iter_mut().enumerate() {
            for (name, lin) in layer.projections_mut() {
                let ProjWeight::Dense(w) = &lin.weight else {
                    return Err(ModelError::Input(format!(
                        "model.layers.{i}.{name}: an 8-bit draft needs dense weights, not a quantized base"
                    )));
                };
                lin.decode_int8 = Some(copy(w, &format!("model.layers.{i}.{name}"))?);
            }
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let mut draft = Llama {
            config: self.config.clone(),
            embed_tokens: self.embed_tokens.clone(),
            layers,
            norm: self.norm.clone(),
            lm_head: self.lm_head.clone(),
            lm_head_int8: Some(copy(head, "lm_head")?),
            train_kernels: self.train_kernels,
            fused_kernels: self.fused_kernels,
            rope: RotaryTable::empty(),
            device: self.device.clone(),
        };
        draft.rope = RotaryTable::new(&draft.config);
        Ok(draft)
    }

    /// Final norm + LM head.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        self.lm_head(&self.final_norm(h, false)?)
    }

    /// Attaches (or replaces) a LoRA adapter on projection `name` of layer `layer`.
    pub fn set_lora(
        &mut self,
        layer: usize,
        name: &str,
        adapter: Option<LoraAdapter>,
    ) -> Result<()> {
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Input(format!("layer {layer} does not exist")))?;
        let target = Self::projection_mut(l, name)?;
        let i = target
            .part_index(name)
            .ok_or_else(|| ModelError::Input(format!("no projection `{name}`")))?;
        target.lora[i] = adapter;
        Ok(())
    }

    pub fn projection<'a>(layer: &'a DecoderLayer, name: &str) -> Result<&'a FusedLinear> {
        Ok(match name {
            "q_proj" | "k_proj" | "v_proj" => &layer.qkv,
            "o_proj" => &layer.o_proj,
            "gate_proj" | "up_proj" => &layer.gate_up,
            "down_proj" => &layer.down_proj,
            other => {
                return Err(ModelError::Input(format!(
                    "`{other}` is not a projection of this model (valid: {})",
                    PROJECTIONS.join(", ")
                )))
            }
        })
    }

    fn projection_mut<'a>(layer: &'a mut DecoderLayer, name: &str) -> Result<&'a mut FusedLinear> {
        Ok(match name {
            "q_proj" | "k_proj" | "v_proj" => &mut layer.qkv,
            "o_proj" => &mut layer.o_proj,
            "gate_proj" | "up_proj" => &mut layer.gate_up,
            "down_proj" => &mut layer.down_proj,
            other => {
                return Err(ModelError::Input(format!(
                    "`{other}` is not a projection of this model (valid: {})",
                    PROJECTIONS.join(", ")
                )))
            }
        })
    }

    /// Keeps every layer's projections as blocks of `format` (QLoRA); projections already
    /// quantized stay as they are.
    pub fn quantize_projections(&mut self, format: BaseQuantization) -> Result<()> {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.quantize_projections(format, &format!("model.layers.{i}"))?;
        }
        Ok(())
    }

    /// Bytes the projections' quantized blocks take, and the dense bytes they replace (f32);
    /// `None` when no projection is quantized.
    pub fn quantized_base(&self) -> Option<QuantizedBase> {
        let mut out = QuantizedBase::default();
        for l in &self.layers {
            for (_, lin) in l.projections() {
                if let ProjWeight::Quantized { blocks, .. } = &lin.weight {
                    let (r, c) = blocks.dims();
                    out.format = Some(blocks.format());
                    out.weights += r * c;
                    out.bytes += blocks.storage_bytes();
                }
            }
        }
        out.format.is_some().then_some(out)
    }

    /// Folds all LoRA adapters into the base weights.
    pub fn merge_lora(&mut self) -> Result<()> {
        for l in &mut self.layers {
            for p in [&mut l.qkv, &mut l.o_proj, &mut l.gate_up, &mut l.down_proj] {
                p.merge_lora()?;
            }
        }
        Ok(())
    }

    /// All weights under their HF names (fused projections split back; views, no copies).
    pub fn named_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                l.input_layernorm.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_attention_layernorm.clone(),
            ));
            for (group, lin) in [
                ("self_attn", &l.qkv),
                ("self_attn", &l.o_proj),
                ("mlp", &l.gate_up),
                ("mlp", &l.down_proj),
            ] {
                for (j, part) in lin.parts.iter().enumerate() {
                    out.push((
                        format!("{p}.{group}.{}.weight", part.name),
                        lin.part_weight(j)?,
                    ));
                    if let Some(b) = lin.part_bias(j)? {
                        out.push((format!("{p}.{group}.{}.bias", part.name), b));
                    }
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.clone()));
        }
        Ok(out)
    }
}
