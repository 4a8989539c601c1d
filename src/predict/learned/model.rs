//! The online model: logistic regression on the feature vector, trained by
//! stochastic gradient descent with AdaGrad step sizes (Duchi, Hazan and
//! Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
//! Optimization", JMLR 2011) and a small L2 penalty.
//!
//! It starts from hand-set prior weights (more recent accesses and a higher
//! decayed rate mean a likelier access; staleness means a less likely one),
//! so that it ranks sensibly before the first label arrives, and moves away
//! from them as labelled examples come in.

use super::features::{Features, NUM_FEATURES};

/// Logistic regression `p = sigmoid(w . x + b)`.
#[derive(Debug, Clone)]
pub struct Logistic {
    w: [f32; NUM_FEATURES],
    b: f32,
    /// AdaGrad: sums of squared gradients (weights, then bias).
    g2: [f32; NUM_FEATURES + 1],
    lr: f32,
    l2: f32,
    /// Examples trained on.
    seen: u64,
    /// Exponentially weighted log-loss of the examples, before each update.
    loss: f64,
}

/// Initial weights (see the module doc): per feature, in vector order.
const PRIOR: [f32; NUM_FEATURES] = [
    0.8,  // ln_count_5m
    0.5,  // ln_count_30m
    0.3,  // ln_count_3h
    0.1,  // ln_count_24h
    -0.3, // ln_recency_min
    0.1,  // ln_total
    0.0,  // ln_age_min
    0.0,  // gap_mean
    0.0,  // gap_std
    0.0,  // overdue
    0.2,  // has_gaps
    0.1,  // hod_lift
    0.05, // dow_lift
    0.1,  // ln_prefix_5m
    0.05, // ln_prefix_30m
    0.0,  // ln_horizon_min
    0.5,  // ln_value_reads
];
const PRIOR_BIAS: f32 = -1.5;

pub(super) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl Default for Logistic {
    fn default() -> Self {
        Logistic::new(0.05, 1e-5)
    }
}

impl Logistic {
    /// Prior weights, learning rate `lr`, L2 penalty `l2`.
    pub fn new(lr: f32, l2: f32) -> Self {
        Logistic {
            w: PRIOR,
            b: PRIOR_BIAS,
            g2: [1.0; NUM_FEATURES + 1],
            lr,
            l2,
            seen: 0,
            loss: f64::NAN,
        }
    }

    /// All-zero weights (for tests that compare with the untrained model).
    pub fn zero(lr: f32, l2: f32) -> Self {
        Logistic {
            w: [0.0; NUM_FEATURES],
            b: 0.0,
            ..Logistic::new(lr, l2)
        }
    }

    pub fn logit(&self, x: &Features) -> f32 {
        let mut z = self.b;
        for (w, x) in self.w.iter().zip(x) {
            z += w * x;
        }
        z
    }

    pub fn probability(&self, x: &Features) -> f32 {
        sigmoid(self.logit(x))
    }

    /// Log-loss of one example (natural log, clamped).
    pub fn log_loss(&self, x: &Features, y: bool) -> f64 {
        let p = f64::from(self.probability(x)).clamp(1e-7, 1.0 - 1e-7);
        if y { -p.ln() } else { -(1.0 - p).ln() }
    }

    /// One SGD step on `(x, y)` with importance `weight`.
    pub fn update(&mut self, x: &Features, y: bool, weight: f32) {
        let l = self.log_loss(x, y);
        self.loss = if self.loss.is_nan() {
            l
        } else {
            0.999 * self.loss + 0.001 * l
        };
        self.seen += 1;
        let err = (self.probability(x) - if y { 1.0 } else { 0.0 }) * weight;
        for ((w, g2), x) in self.w.iter_mut().zip(&mut self.g2).zip(x) {
            let g = err * x + self.l2 * *w;
            *g2 += g * g;
            *w -= self.lr * g / g2.sqrt();
        }
        self.g2[NUM_FEATURES] += err * err;
        self.b -= self.lr * err / self.g2[NUM_FEATURES].sqrt();
    }

    pub fn weights(&self) -> (&[f32; NUM_FEATURES], f32) {
        (&self.w, self.b)
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Running log-loss (NaN before the first example).
    pub fn running_loss(&self) -> f64 {
        self.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Separable in feature 0: the model learns a positive weight there and
    /// its log-loss falls.
    #[test]
    fn learns_a_separable_rule() {
        let mut m = Logistic::zero(0.5, 0.0);
        let mut x = [0.0; NUM_FEATURES];
        let examples: Vec<(Features, bool)> = (0..200)
            .map(|i| {
                x[0] = if i % 2 == 0 { 2.0 } else { 0.0 };
                x[1] = (i % 7) as f32 / 7.0;
                (x, i % 2 == 0)
            })
            .collect();
        let loss = |m: &Logistic| {
            examples.iter().map(|(x, y)| m.log_loss(x, *y)).sum::<f64>() / examples.len() as f64
        };
        let before = loss(&m);
        for _ in 0..20 {
            for (x, y) in &examples {
                m.update(x, *y, 1.0);
            }
        }
        let after = loss(&m);
        assert!(after < before * 0.3, "{before} -> {after}");
        assert!(m.weights().0[0] > 1.0);
        assert_eq!(m.seen(), 4000);
        assert!(m.running_loss() < before);
    }
}
