//! Frequency estimates for the simulated cache's admission filter: a
//! count-min sketch of recent reads, the "tiny" part of TinyLFU (Einziger,
//! Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy", ACM TOS 13(4), 2017), which moka, the embedded cache, puts in
//! front of its LRU.
//!
//! Four rows of 4-bit counters (kept in bytes, saturating at 15), each row
//! indexed by a different mix of the key's id; the estimate is the smallest
//! of the four. After `10 x width` increments every counter is halved
//! (aging), so the sketch describes recent popularity, not all history.
//!
//! Kept here (a few dozen lines): the admission rule needs TinyLFU's
//! saturating 4-bit counters and periodic halving together.

/// Rows of the sketch.
const ROWS: usize = 4;
/// Largest counter value (4-bit counters, as in TinyLFU).
const MAX_COUNT: u8 = 15;
/// Seeds of the row hashes.
const SEEDS: [u64; ROWS] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x85EB_CA77_C2B2_AE63,
];

/// A count-min sketch with aging (see the module doc).
#[derive(Debug, Clone)]
pub struct FrequencySketch {
    counters: Vec<u8>,
    /// Counters per row, a power of two.
    width: usize,
    /// Increments since the last halving.
    additions: u64,
    /// Increments between two halvings.
    sample: u64,
}

impl FrequencySketch {
    /// A sketch for a cache of about `entries` entries (width: the next
    /// power of two, at least 64).
    pub fn new(entries: u64) -> Self {
        let width = entries.clamp(64, 1 << 24).next_power_of_two() as usize;
        FrequencySketch {
            counters: vec![0; ROWS * width],
            width,
            additions: 0,
            sample: 10 * width as u64,
        }
    }

    fn slot(&self, row: usize, id: u64) -> usize {
        // SplitMix64's finaliser over the id mixed with the row's seed.
        let mut z = id ^ SEEDS[row];
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        row * self.width + (z as usize & (self.width - 1))
    }

    /// Counts one read of `id`.
    pub fn increment(&mut self, id: u64) {
        let mut added = false;
        for row in 0..ROWS {
            let i = self.slot(row, id);
            if self.counters[i] < MAX_COUNT {
                self.counters[i] += 1;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.sample {
                for c in &mut self.counters {
                    *c /= 2;
                }
                self.additions /= 2;
            }
        }
    }

    /// The estimated recent reads of `id` (0..=15).
    pub fn frequency(&self, id: u64) -> u8 {
        (0..ROWS)
            .map(|row| self.counters[self.slot(row, id)])
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_age() {
        let mut s = FrequencySketch::new(1000);
        for _ in 0..5 {
            s.increment(7);
        }
        assert_eq!(s.frequency(7), 5);
        assert_eq!(s.frequency(8), 0);
        for _ in 0..100 {
            s.increment(7);
        }
        assert_eq!(s.frequency(7), MAX_COUNT);
        // Enough other reads to trigger a halving: 7's count halves.
        let before = s.frequency(7);
        let mut id = 1_000_000;
        while s.frequency(7) == before {
            s.increment(id);
            id += 1;
        }
        assert_eq!(s.frequency(7), before / 2);
        assert!(id - 1_000_000 <= s.sample, "{}", id - 1_000_000);
    }

    /// Estimates never undercount (count-min) and are mostly exact on a
    /// sketch as wide as the key set.
    #[test]
    fn estimates_are_close_for_a_sketch_of_the_right_size() {
        let mut s = FrequencySketch::new(4096);
        for id in 0..4096u64 {
            for _ in 0..(id % 4) {
                s.increment(id);
            }
        }
        let mut exact = 0;
        for id in 0..4096u64 {
            let f = u64::from(s.frequency(id));
            assert!(f >= id % 4, "never under: {id}");
            exact += u64::from(f == id % 4);
        }
        assert!(exact > 3600, "{exact} of 4096 exact");
    }
}
