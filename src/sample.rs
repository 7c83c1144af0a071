//! Token sampling for `bitconv run`: greedy at temperature 0, otherwise temperature, top-k and
//! top-p (nucleus) sampling with a seeded generator, so a seed reproduces a run.

/// Sampling settings.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    /// Temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
    state: u64,
}

impl Sampler {
    /// A sampler with the given settings and seed.
    pub fn new(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler {
            temperature,
            top_k,
            top_p,
            state: seed ^ 0x2545_F491_4F6C_DD1D,
        }
    }

    fn uniform(&mut self) -> f64 {
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from a row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return crate::runtime::argmax(logits) as u32;
        }
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.top_k > 0 {
            idx.truncate(self.top_k);
        }
        let max = logits[idx[0]] as f64;
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / self.temperature as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut r = self.uniform();
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return idx[i] as u32;
            }
            r -= p;
        }
        idx[probs.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded_sampling() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        assert_eq!(Sampler::new(0.0, 0, 1.0, 1).sample(&logits), 1);
        let run = |seed| {
            let mut s = Sampler::new(1.0, 0, 1.0, seed);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // top-k 1 is greedy whatever the temperature.
        let mut s = Sampler::new(5.0, 1, 1.0, 3);
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        // top-p keeps only the two close leaders.
        let mut s = Sampler::new(1.0, 0, 0.9, 3);
        assert!((0..50).all(|_| matches!(s.sample(&logits), 1 | 2)));
    }
}
