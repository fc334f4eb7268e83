//! The layout facts of each base-quantization format: values per block and bytes per block.

use super::BaseQuantization;
use candle_core::quantized::k_quants::{BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType};

/// Values per block and the bytes one block takes.
pub trait FormatFacts {
    fn block_values(self) -> usize;
    fn block_bytes(self) -> usize;
    /// Storage per weight, in bits.
    fn bits_per_weight(self) -> f64;
}

impl FormatFacts for BaseQuantization {
    fn block_values(self) -> usize {
        match self {
            BaseQuantization::Q8_0 => BlockQ8_0::BLCK_SIZE,
            BaseQuantization::Q4_0 => BlockQ4_0::BLCK_SIZE,
            BaseQuantization::Q4_1 => BlockQ4_1::BLCK_SIZE,
            BaseQuantization::Q4K => BlockQ4K::BLCK_SIZE,
            BaseQuantization::Nf4 => super::nf4::BLOCK,
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            BaseQuantization::Q8_0 => std::mem::size_of::<BlockQ8_0>(),
            BaseQuantization::Q4_0 => std::mem::size_of::<BlockQ4_0>(),
            BaseQuantization::Q4_1 => std::mem::size_of::<BlockQ4_1>(),
            BaseQuantization::Q4K => std::mem::size_of::<BlockQ4K>(),
            // Packed nibbles plus the f32 absmax.
            BaseQuantization::Nf4 => super::nf4::BLOCK / 2 + 4,
        }
    }

    fn bits_per_weight(self) -> f64 {
        8.0 * self.block_bytes() as f64 / self.block_values() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_per_weight_matches_the_published_formats() {
        let bits = |q: BaseQuantization| q.bits_per_weight();
        assert_eq!(bits(BaseQuantization::Q8_0), 8.5);
        assert_eq!(bits(BaseQuantization::Q4_0), 4.5);
        assert_eq!(bits(BaseQuantization::Q4_1), 5.0);
        assert_eq!(bits(BaseQuantization::Q4K), 4.5);
        assert_eq!(bits(BaseQuantization::Nf4), 4.5);
        assert_eq!(BaseQuantization::Q4K.block_values(), 256);
    }
}
