//! A bounded "best `k`" selector: a min-heap of at most `k` entries, so
//! choosing the top `k` of `n` candidates costs O(n log k) time and O(k)
//! memory instead of sorting all `n`.
//!
//! Order: higher score first; equal scores by key ascending, so results are
//! deterministic whatever order the candidates arrive in (the tracker's
//! iteration order depends on a per-process random hash seed).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// One candidate. `Ord` says "greater = better".
#[derive(Debug, Clone)]
struct Ranked {
    score: f64,
    /// [`key_lead`] of `key`: most ties of score are settled by it, without
    /// reaching for the key's bytes.
    lead: u64,
    key: String,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        better(
            (self.score, self.lead, &self.key),
            (other.score, other.lead, &other.key),
        )
    }
}

/// `Greater` when `a` = `(score, lead, key)` ranks before `b`: a higher
/// score, then the smaller key (its lead first).
fn better(a: (f64, u64, &str), b: (f64, u64, &str)) -> Ordering {
    a.0.total_cmp(&b.0)
        .then(b.1.cmp(&a.1))
        .then_with(|| b.2.cmp(a.2))
}

/// The first 8 bytes of `key`, zero-padded, as a big-endian number. Keys
/// whose leads differ compare as their leads do (a key that is a prefix of
/// another pads with the smallest byte), so comparing leads first settles
/// most key comparisons with one integer comparison.
pub fn key_lead(key: &str) -> u64 {
    let b = key.as_bytes();
    let mut lead = [0u8; 8];
    let n = b.len().min(8);
    lead[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(lead)
}

/// Keeps the `k` best `(score, key)` pairs offered.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096)),
        }
    }

    /// Offers a candidate; the key is copied only when it is kept. NaN scores
    /// are treated as 0.
    pub fn offer(&mut self, score: f64, key: &str) {
        if self.k == 0 {
            return;
        }
        let score = if score.is_nan() { 0.0 } else { score };
        let lead = key_lead(key);
        if self.heap.len() < self.k {
            self.heap.push(Reverse(Ranked {
                score,
                lead,
                key: key.to_string(),
            }));
            return;
        }
        let Some(mut worst) = self.heap.peek_mut() else {
            return;
        };
        let w = &worst.0;
        if better((score, lead, key), (w.score, w.lead, &w.key)) == Ordering::Greater {
            // Replaced in place (one sift-down when `worst` drops), reusing
            // the evicted key's allocation.
            worst.0.score = score;
            worst.0.lead = lead;
            worst.0.key.clear();
            worst.0.key.push_str(key);
        }
    }

    /// The kept pairs, best first.
    pub fn into_sorted(self) -> Vec<(String, f64)> {
        let mut kept = self.heap.into_vec();
        // Best first; a pattern-defeating quicksort, several times faster
        // than the heap's own heapsort on tens of thousands of entries.
        kept.sort_unstable_by(|Reverse(a), Reverse(b)| b.cmp(a));
        kept.into_iter()
            .map(|Reverse(r)| (r.key, r.score))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_key_tiebreak() {
        let mut t = TopK::new(3);
        for (s, k) in [
            (1.0, "a"),
            (5.0, "b"),
            (3.0, "c"),
            (5.0, "a2"),
            (0.5, "d"),
            (3.0, "b2"),
        ] {
            t.offer(s, k);
        }
        let got: Vec<_> = t.into_sorted().into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, ["a2", "b", "b2"]);
    }

    /// Many offers, many ties: the same answer as sorting everything.
    #[test]
    fn agrees_with_a_full_sort() {
        // Short keys (their leads differ), long keys sharing their first 8
        // bytes or more (ties of lead), and keys that are prefixes of others.
        let offers: Vec<(f64, String)> = (0..5000u64)
            .map(|i| {
                let n = (i * 104_729) % 5000;
                let key = match i % 3 {
                    0 => format!("k{n}"),
                    1 => format!("session:long:{n}"),
                    _ => format!("sess{}", n / 7),
                };
                (((i * 7919) % 97) as f64, key)
            })
            .collect();
        for k in [1, 10, 999, 5000, 6000] {
            let mut t = TopK::new(k);
            for (s, key) in &offers {
                t.offer(*s, key);
            }
            let mut all = offers.clone();
            // Higher score first, then the key, compared plainly.
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            all.truncate(k);
            let want: Vec<(String, f64)> = all.into_iter().map(|(s, key)| (key, s)).collect();
            assert_eq!(t.into_sorted(), want, "k = {k}");
        }
    }

    #[test]
    fn leads_order_as_keys_do() {
        let keys = [
            "",
            "\u{0}",
            "a",
            "a\u{0}b",
            "ab",
            "abcdefgh",
            "abcdefgh0",
            "abcdefgi",
            "b",
            "é",
        ];
        for a in keys {
            for b in keys {
                let (la, lb) = (key_lead(a), key_lead(b));
                if la != lb {
                    assert_eq!(la.cmp(&lb), a.cmp(b), "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn zero_k_and_nan() {
        let mut t = TopK::new(0);
        t.offer(1.0, "a");
        assert!(t.into_sorted().is_empty());
        let mut t = TopK::new(2);
        t.offer(f64::NAN, "n");
        t.offer(-1.0, "m");
        assert_eq!(t.into_sorted()[0].0, "n");
    }
}
