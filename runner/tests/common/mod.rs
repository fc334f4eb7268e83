//! Shared test helpers: locating ../shared, the embedded model (fetched once, cached outside
//! the clone), and reading reference safetensors.
#![allow(dead_code)]

pub mod tiny;

use pruneforge::loader::{load_hf_dir, HfModel};
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn shared_dir() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(
        p.is_dir(),
        "../shared (data and references) must sit beside the clone: {}",
        p.display()
    );
    p
}

pub fn reference(name: &str) -> PathBuf {
    shared_dir().join("reference").join(name)
}

/// The embedded default model's HF directory; fails loudly if it cannot be fetched.
pub fn embedded_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match pruneforge::loader::embedded::ensure_hf_dir() {
        Ok(d) => d,
        Err(e) => panic!("the parity tests need the embedded model: {e}"),
    })
    .clone()
}

pub fn embedded_model() -> HfModel {
    load_hf_dir(
        &embedded_dir(),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .expect("load embedded model")
}

pub struct RefTensors {
    bytes: Vec<u8>,
}

impl RefTensors {
    pub fn open(name: &str) -> Self {
        Self {
            bytes: std::fs::read(reference(name)).expect("read reference safetensors"),
        }
    }
    fn view(&self, name: &str) -> safetensors::tensor::TensorView<'_> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("parse");
        // Leak-free re-borrow: the view borrows self.bytes.
        let v = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference tensor {name}"));
        safetensors::tensor::TensorView::new(v.dtype(), v.shape().to_vec(), v.data()).expect("view")
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view(name).shape().to_vec()
    }
    pub fn f32(&self, name: &str) -> Vec<f32> {
        let v = self.view(name);
        assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
        v.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    pub fn f64(&self, name: &str) -> Vec<f64> {
        let v = self.view(name);
        assert_eq!(v.dtype(), safetensors::Dtype::F64, "{name}");
        v.data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn i64(&self, name: &str) -> Vec<i64> {
        let v = self.view(name);
        assert_eq!(v.dtype(), safetensors::Dtype::I64, "{name}");
        v.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

pub fn read_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(reference(name)).expect("read reference json"))
        .expect("json")
}

/// Gives every adapter's B random values in ±0.05, drawn in order from `SplitMix64::new(seed)`:
/// PEFT starts B at 0, where A has no gradient; tests of gradients want both non-zero.
pub fn randomize_lora_b(lora: &pruneforge::train::lora::LoraSet, seed: u64) {
    let mut rng = pruneforge::util::rng::SplitMix64::new(seed);
    let values: Vec<Vec<f32>> = lora
        .values()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 2 == 1 {
                v.iter()
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * 0.05) as f32)
                    .collect()
            } else {
                v
            }
        })
        .collect();
    lora.set_values(&values).unwrap();
}

/// The reference prompts of ../shared/reference/logits.safetensors.
pub const REFERENCE_PROMPTS: [&str; 4] = ["p1", "p2", "c1", "c2"];

/// The token ids of each of [`REFERENCE_PROMPTS`], in that order.
pub fn reference_prompt_ids() -> Vec<Vec<u32>> {
    let refs = RefTensors::open("logits.safetensors");
    REFERENCE_PROMPTS
        .iter()
        .map(|p| {
            refs.i64(&format!("{p}/input_ids"))
                .iter()
                .map(|&v| v as u32)
                .collect()
        })
        .collect()
}
