#!/usr/bin/env python3
"""Writes tests/data/learned.onnx: a tiny model for the learned predictor's
ONNX path (cargo feature `onnx`, WARMING_PREDICTOR_MODEL=path.onnx).

The model is logistic regression on the documented feature vector
(docs/learned-predictor.md): input "features" [N, 17] float32, output
"score" [N, 1] float32 = sigmoid(features @ W + b). W and b are the online
model's prior weights (src/predict/learned/model.rs, PRIOR and PRIOR_BIAS),
so the Rust test can check the ONNX scores against the built-in model.

To ship your own model, train any classifier on feature vectors computed
from your logs (label: was the key requested within the window after the
snapshot) and export it with one [N, 17] float32 input and one output of
scores ([N], [N, 1], or [N, 2] class probabilities).

Usage: pip install onnx && python3 scripts/make-onnx-model.py [OUT]
"""
import sys

import onnx
from onnx import TensorProto, helper

NUM_FEATURES = 17
PRIOR = [0.8, 0.5, 0.3, 0.1, -0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.2, 0.1, 0.05, 0.1, 0.05, 0.0, 0.5]
PRIOR_BIAS = -1.5


def build():
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", NUM_FEATURES])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    w = helper.make_tensor("W", TensorProto.FLOAT, [NUM_FEATURES, 1], PRIOR)
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [PRIOR_BIAS])
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["logit0"]),
        helper.make_node("Add", ["logit0", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(nodes, "warming-learned-logistic", [x], [y], initializer=[w, b])
    model = helper.make_model(
        graph,
        producer_name="warming scripts/make-onnx-model.py",
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/learned.onnx"
    onnx.save(build(), out)
    print(f"wrote {out}")
