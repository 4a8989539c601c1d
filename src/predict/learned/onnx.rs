//! Scoring with a model trained offline, loaded from an ONNX file with
//! tract (pure Rust). Only with the `onnx` cargo feature.
//!
//! The model takes one input, `[N, 17]` float32: one row per key, the
//! feature vector of [`super::features::FEATURE_NAMES`] in that order. Its
//! first output holds one score per row (`[N]`, `[N, 1]`, or `[N, 2]` whose
//! last column is taken as the positive-class probability, as scikit-learn
//! classifiers export); higher means likelier to be requested. Scores are
//! only compared with each other, so a logit works as well as a probability.

use std::path::Path;

use anyhow::{Context as _, bail};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

use super::features::{Features, NUM_FEATURES};

/// A loaded, optimized model with a symbolic batch dimension.
pub struct OnnxModel {
    plan: std::sync::Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnnxModel")
    }
}

impl OnnxModel {
    /// Loads and optimizes the model at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let batch = model.sym("N");
        let plan = model
            .with_input_fact(0, f32::fact(dims!(batch, NUM_FEATURES)).into())?
            .into_optimized()?
            .into_runnable()?;
        let m = OnnxModel { plan };
        // Fail at load, not at the first prediction, if the shapes are wrong.
        let mut out = Vec::new();
        m.score(&[[0.0; NUM_FEATURES]; 2], &mut out)
            .with_context(|| {
                format!("the model does not take [N, {NUM_FEATURES}] float32 features")
            })?;
        Ok(m)
    }

    /// Scores every row of `rows` into `out` (cleared first).
    pub fn score(&self, rows: &[Features], out: &mut Vec<f32>) -> anyhow::Result<()> {
        out.clear();
        if rows.is_empty() {
            return Ok(());
        }
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = Tensor::from_shape(&[rows.len(), NUM_FEATURES], &flat)?;
        let result = self.plan.run(tvec!(input.into()))?;
        let Some(first) = result.first() else {
            bail!("the model has no output");
        };
        let view = first.to_plain_array_view::<f32>()?;
        let shape = view.shape().to_vec();
        match shape.as_slice() {
            [n] | [n, 1] if *n == rows.len() => out.extend(view.iter().copied()),
            [n, c] if *n == rows.len() && *c >= 2 => {
                out.extend(view.outer_iter().map(|row| row[c - 1]));
            }
            _ => bail!(
                "output shape {shape:?} is not [{}] or [{}, k]",
                rows.len(),
                rows.len()
            ),
        }
        Ok(())
    }
}
