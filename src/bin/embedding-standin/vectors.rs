//! Deterministic unit vectors: the same post always gets the same vector,
//! and different posts get unrelated ones.
//!
//! A post's caption (`null` and `""` kept apart) and image URLs are hashed
//! (FNV-1a, 64 bits) into the seed of a SplitMix64 sequence; its first 2048
//! draws, mapped to [-1, 1), are the native vector. Asking for a smaller
//! width keeps the first numbers and normalises them again, as the real
//! API's Matryoshka truncation does, so only those numbers are computed.

/// The model's native width.
pub const NATIVE_WIDTH: usize = 2048;

/// The vector of a post, of unit length, `dimension` wide.
pub fn post_vector(caption: Option<&str>, image_urls: &[String], dimension: usize) -> Vec<f32> {
    let mut hash = Fnv::new();
    match caption {
        None => hash.write(&[0]),
        Some(text) => {
            hash.write(&[1]);
            hash.write(&(text.len() as u64).to_le_bytes());
            hash.write(text.as_bytes());
        }
    }
    for url in image_urls {
        hash.write(&(url.len() as u64).to_le_bytes());
        hash.write(url.as_bytes());
    }

    let mut state = hash.0;
    let mut vector: Vec<f32> = (0..dimension.min(NATIVE_WIDTH))
        .map(|_| (next_unit(&mut state) * 2.0 - 1.0) as f32)
        .collect();
    let norm = vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    for x in &mut vector {
        *x = (f64::from(*x) / norm) as f32;
    }
    vector
}

/// The next number of a SplitMix64 sequence, in [0, 1).
pub fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
