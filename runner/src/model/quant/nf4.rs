//! NF4 (4-bit NormalFloat) as bitsandbytes quantizes it (`quantize_4bit(quant_type="nf4")`,
//! blocksize 64, no double quantization): each block of 64 consecutive values is divided by
//! its absolute maximum and every value becomes the index of the nearest of 16 code values
//! (the quantiles of a normal distribution, scaled to [-1, 1], with an exact zero). Two
//! indices share a byte, the first in the high nibble. Dequantized: `code[index] * absmax`.

/// Values per block.
pub const BLOCK: usize = 64;

/// bitsandbytes' NF4 code book (`bitsandbytes.functional.get_4bit_type("nf4")`).
pub const CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The index of the code value nearest to `x` (in [-1, 1]). A value exactly on a midpoint
/// goes to the lower code, as in bitsandbytes' decision tree (`x > midpoint`).
#[inline]
pub fn encode(x: f32) -> u8 {
    // Binary search over the 15 midpoints.
    let mut lo = 0usize;
    let mut hi = 15usize;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let midpoint = 0.5 * (CODE[mid] + CODE[mid + 1]);
        if x > midpoint {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo as u8
}

/// Quantizes `values` (a multiple of [`BLOCK`] long): packed codes (`values.len() / 2` bytes)
/// and one absmax per block.
pub fn quantize(values: &[f32], codes: &mut [u8], absmax: &mut [f32]) {
    for ((block, codes), amax) in values
        .chunks_exact(BLOCK)
        .zip(codes.chunks_exact_mut(BLOCK / 2))
        .zip(absmax.iter_mut())
    {
        let m = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        *amax = m;
        let inv = if m > 0.0 { 1.0 / m } else { 0.0 };
        for (pair, byte) in block.chunks_exact(2).zip(codes.iter_mut()) {
            *byte = (encode(pair[0] * inv) << 4) | encode(pair[1] * inv);
        }
    }
}

/// Dequantizes whole blocks: `out.len()` = `codes.len() * 2` = `absmax.len() * BLOCK`.
pub fn dequantize(codes: &[u8], absmax: &[f32], out: &mut [f32]) {
    for ((codes, &m), out) in codes
        .chunks_exact(BLOCK / 2)
        .zip(absmax)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        // The 16 products of this block, then a lookup per nibble.
        let table: [f32; 16] = std::array::from_fn(|i| CODE[i] * m);
        for (byte, pair) in codes.iter().zip(out.chunks_exact_mut(2)) {
            pair[0] = table[(byte >> 4) as usize];
            pair[1] = table[(byte & 0x0F) as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_value_encodes_to_itself_and_midpoints_split_neighbours() {
        for (i, &c) in CODE.iter().enumerate() {
            assert_eq!(encode(c) as usize, i);
        }
        for i in 0..15 {
            let mid = 0.5 * (CODE[i] + CODE[i + 1]);
            assert_eq!(encode(mid - 1e-6) as usize, i);
            assert_eq!(encode(mid + 1e-6) as usize, i + 1);
        }
        assert_eq!(encode(-1.0), 0);
        assert_eq!(encode(1.0), 15);
    }

    #[test]
    fn a_hand_computed_block() {
        // absmax 2: x/2 = 1 → 15, -1 → 0, 0 → 7, 0.25 → nearest 0.2461 (10),
        // -0.3 → nearest -0.2844 (4).
        let mut v = vec![0f32; BLOCK];
        v[0] = 2.0;
        v[1] = -2.0;
        v[3] = 0.5;
        v[4] = -0.6;
        let mut codes = vec![0u8; BLOCK / 2];
        let mut amax = [0f32];
        quantize(&v, &mut codes, &mut amax);
        assert_eq!(amax[0], 2.0);
        assert_eq!(codes[0], 0xF0);
        assert_eq!(codes[1], 0x7A);
        assert_eq!(codes[2], 0x47);
        assert_eq!(codes[3], 0x77);
        let mut back = vec![0f32; BLOCK];
        dequantize(&codes, &amax, &mut back);
        assert_eq!(back[0], 2.0);
        assert_eq!(back[1], -2.0);
        assert_eq!(back[2], 0.0);
        assert_eq!(back[3], 2.0 * CODE[10]);
        assert_eq!(back[4], 2.0 * CODE[4]);
    }

    #[test]
    fn an_all_zero_block_stays_zero() {
        let v = vec![0f32; BLOCK];
        let mut codes = vec![0u8; BLOCK / 2];
        let mut amax = [1f32];
        quantize(&v, &mut codes, &mut amax);
        let mut back = vec![1f32; BLOCK];
        dequantize(&codes, &amax, &mut back);
        assert!(back.iter().all(|&x| x == 0.0));
    }
}
