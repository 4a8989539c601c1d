//! Scoring many keys at once: the feature vector of [`features`] computed
//! column by column for [`BLOCK`] keys, and the model's logit summed over
//! those columns. The arithmetic then runs on several keys per instruction,
//! which matters where every tracked key is scored: each refresh firing, and
//! replay's prediction quality, which ranks every key at each window.
//!
//! The result is bit for bit the scalar `model.logit(&features(..))`: the
//! same operations, in the same order, on each key (a test checks it).
//!
//! [`features`]: super::features::features

use super::features::{
    Context, DAY, HALF_LIVES, HOD_SLOTS, KeyState, PREFIX_HALF_LIVES, WEEK, dow_slot,
    exp2_neg_in_range, hod_slot, ln_1p,
};
use super::model::Logistic;

/// Keys per block.
pub const BLOCK: usize = 16;

type Col = [f32; BLOCK];

/// The inputs of up to [`BLOCK`] keys, one array per input.
pub struct Block {
    len: usize,
    dt: Col,
    age: Col,
    decayed: [Col; 4],
    count: Col,
    /// 1 with two accesses or more, else 0.
    gaps: Col,
    /// 1 with three accesses or more, else 0.
    spread: Col,
    gap_mean: Col,
    gap_var: Col,
    /// The key's accesses in the target's hour-of-day slot, and in all.
    hod: Col,
    hod_total: Col,
    /// The same per day of week.
    dow: Col,
    dow_total: Col,
    prefix: [Col; 2],
    prefix_dt: Col,
    /// Reads of the current value, 0 once it lived out.
    value_reads: Col,
}

impl Default for Block {
    fn default() -> Self {
        Block {
            len: 0,
            dt: [0.0; BLOCK],
            age: [0.0; BLOCK],
            decayed: [[0.0; BLOCK]; 4],
            count: [0.0; BLOCK],
            gaps: [0.0; BLOCK],
            spread: [0.0; BLOCK],
            gap_mean: [0.0; BLOCK],
            gap_var: [0.0; BLOCK],
            hod: [0.0; BLOCK],
            hod_total: [0.0; BLOCK],
            dow: [0.0; BLOCK],
            dow_total: [0.0; BLOCK],
            prefix: [[0.0; BLOCK]; 2],
            prefix_dt: [0.0; BLOCK],
            value_reads: [0.0; BLOCK],
        }
    }
}

/// What is the same for every key of a scoring pass.
pub struct Pass {
    ctx: Context,
    hod_slot: usize,
    dow_slot: usize,
    horizon: f32,
}

impl Pass {
    pub fn new(ctx: Context) -> Self {
        let target = ctx.now_unix + u64::from(ctx.horizon_secs / 2);
        Pass {
            hod_slot: hod_slot(target),
            dow_slot: dow_slot(target),
            horizon: ln_1p(ctx.horizon_secs as f32 / 60.0),
            ctx,
        }
    }
}

impl Block {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds a key: its state, and its prefix slot's stored counts and
    /// update time ([`super::features::PrefixTable::raw`]).
    pub fn push(&mut self, s: &KeyState, prefix: ([f32; 2], u32), pass: &Pass) {
        debug_assert!(self.len < BLOCK);
        let l = self.len;
        let now = pass.ctx.now_rel;
        self.dt[l] = now.saturating_sub(s.last) as f32;
        self.age[l] = now.saturating_sub(s.first) as f32;
        for k in 0..4 {
            self.decayed[k][l] = s.decayed[k];
        }
        self.count[l] = s.count as f32;
        self.gaps[l] = if s.count >= 2 { 1.0 } else { 0.0 };
        self.spread[l] = if s.count >= 3 { 1.0 } else { 0.0 };
        self.gap_mean[l] = s.gap_mean;
        self.gap_var[l] = s.gap_var;
        self.hod[l] = f32::from(s.hod[pass.hod_slot]);
        self.hod_total[l] = s.hod.iter().map(|&c| u32::from(c)).sum::<u32>() as f32;
        self.dow[l] = f32::from(s.dow[pass.dow_slot]);
        self.dow_total[l] = s.dow.iter().map(|&c| u32::from(c)).sum::<u32>() as f32;
        self.prefix[0][l] = prefix.0[0];
        self.prefix[1][l] = prefix.0[1];
        self.prefix_dt[l] = now.saturating_sub(prefix.1) as f32;
        let lived_out = s.expires.saturating_add(pass.ctx.horizon_secs / 2);
        self.value_reads[l] = if now < lived_out {
            f32::from(s.value_reads)
        } else {
            0.0
        };
        self.len += 1;
    }

    /// The model's logit of every key pushed (lanes past `len` hold
    /// leftovers: ignore them).
    pub fn logits(&self, model: &Logistic, pass: &Pass) -> Col {
        let (w, b) = model.weights();
        let mut z = [b; BLOCK];
        // z += w * (feature of each key), one feature after the other, in
        // vector order as `Logistic::logit` sums them.
        let mut add = |w: f32, f: Col| {
            for (z, f) in z.iter_mut().zip(f) {
                *z += w * f;
            }
        };
        for k in 0..4 {
            add(
                w[k],
                column(|l| ln_1p(decay(self.decayed[k][l], self.dt[l], HALF_LIVES[k]))),
            );
        }
        add(w[4], column(|l| ln_1p(self.dt[l] / 60.0)));
        add(w[5], column(|l| ln_1p(self.count[l])));
        add(w[6], column(|l| ln_1p(self.age[l] / 60.0)));
        add(w[7], column(|l| when(self.gaps[l], self.gap_mean[l])));
        add(
            w[8],
            column(|l| when(self.spread[l], self.gap_var[l].max(0.0).sqrt())),
        );
        add(
            w[9],
            column(|l| when(self.gaps[l], ln_1p(self.dt[l]) - self.gap_mean[l])),
        );
        add(w[10], self.gaps);
        add(
            w[11],
            column(|l| {
                lift(self.hod[l], self.hod_total[l], HOD_SLOTS)
                    * (self.age[l] / DAY as f32).min(1.0)
            }),
        );
        add(
            w[12],
            column(|l| {
                lift(self.dow[l], self.dow_total[l], 7) * (self.age[l] / WEEK as f32).min(1.0)
            }),
        );
        for k in 0..2 {
            add(
                w[13 + k],
                column(|l| {
                    ln_1p(decay(
                        self.prefix[k][l],
                        self.prefix_dt[l],
                        PREFIX_HALF_LIVES[k],
                    ))
                }),
            );
        }
        add(w[15], [pass.horizon; BLOCK]);
        add(w[16], column(|l| ln_1p(self.value_reads[l])));
        z
    }
}

/// One value per key. (A plain loop, inlined, so that the compiler runs it
/// on several keys per instruction; `std::array::from_fn` calls `f` per
/// element.)
#[inline(always)]
fn column(f: impl Fn(usize) -> f32) -> Col {
    let mut c = [0.0; BLOCK];
    for (l, c) in c.iter_mut().enumerate() {
        *c = f(l);
    }
    c
}

/// `value` where `flag` is 1, 0 where it is 0.
#[inline(always)]
fn when(flag: f32, value: f32) -> f32 {
    if flag > 0.0 { value } else { 0.0 }
}

/// `features::lift` from the slot's count and the total, without branches.
#[inline(always)]
fn lift(at: f32, total: f32, slots: usize) -> f32 {
    let l = at * slots as f32 / total - 1.0;
    if total > 0.0 { l } else { 0.0 }
}

/// `features::decay` without branches: `c` when `dt <= 0`, else `c` halved
/// every `half_life`, 0 past 126 half-lives.
#[inline(always)]
fn decay(c: f32, dt: f32, half_life: f32) -> f32 {
    let y = dt / half_life;
    let in_range = y <= 126.0;
    let e = exp2_neg_in_range(if in_range { y.max(0.0) } else { 0.0 });
    let d = c * if in_range { e } else { 0.0 };
    if dt <= 0.0 { c } else { d }
}

#[cfg(test)]
mod tests {
    use super::super::features::features;
    use super::*;
    use proptest::prelude::*;

    fn state() -> impl Strategy<Value = KeyState> {
        (
            (0u32..200_000, 0u32..200_000, 0u32..400_000, 1u32..5_000),
            prop::array::uniform4(0.0f32..500.0),
            (0.0f32..14.0, -1.0f32..30.0),
            (
                prop::array::uniform8(any::<u8>()),
                prop::array::uniform7(any::<u8>()),
            ),
            any::<u8>(),
        )
            .prop_map(
                |((first, span, expires, count), decayed, (gm, gv), (hod, dow), vr)| KeyState {
                    first,
                    last: first.saturating_add(span),
                    expires,
                    count,
                    decayed,
                    gap_mean: gm,
                    gap_var: gv,
                    hod,
                    dow,
                    value_reads: vr,
                },
            )
    }

    proptest! {
        /// A block's logits are exactly the scalar path's, key by key,
        /// including keys accessed after `now` and prefixes never updated.
        #[test]
        fn block_logits_equal_the_scalar_ones(
            keys in prop::collection::vec(
                (state(), prop::array::uniform2(0.0f32..1e4), 0u32..400_000),
                1..40,
            ),
            now_rel in 0u32..420_000,
            horizon in 60u32..90_000,
            trained in any::<bool>(),
        ) {
            let ctx = Context {
                now_rel,
                now_unix: 1_700_000_000 + u64::from(now_rel),
                horizon_secs: horizon,
            };
            let mut model = Logistic::default();
            if trained {
                // Weights away from the prior, some of each sign.
                let x: [f32; super::super::features::NUM_FEATURES] =
                    std::array::from_fn(|i| (i as f32 * 0.37).sin() * 3.0);
                for y in [true, false, true] {
                    model.update(&x, y, 1.0);
                }
            }
            let pass = Pass::new(ctx);
            for chunk in keys.chunks(BLOCK) {
                let mut block = Block::default();
                for (s, counts, last) in chunk {
                    block.push(s, (*counts, *last), &pass);
                }
                let z = block.logits(&model, &pass);
                for (l, (s, counts, last)) in chunk.iter().enumerate() {
                    // What `PrefixTable::counts` gives for a slot holding these.
                    let dt = ctx.now_rel.saturating_sub(*last) as f32;
                    let p = [
                        super::super::features::decay(counts[0], dt, PREFIX_HALF_LIVES[0]),
                        super::super::features::decay(counts[1], dt, PREFIX_HALF_LIVES[1]),
                    ];
                    let want = model.logit(&features(s, p, &ctx));
                    prop_assert_eq!(z[l].to_bits(), want.to_bits(), "key {} of {:?}", l, s);
                }
            }
        }
    }
}
