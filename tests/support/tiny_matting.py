"""A tiny background-removal ONNX model, built with onnx's helper API: its foreground map is the image's
brightness (the mean of its three normalised channels), so a bright shape on a dark ground is foreground
and the ground is background, which a test can check pixel for pixel."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def write_matting(path: Path, size: int | None = None) -> Path:
    """The model at ``path``: input ``image`` (1, 3, H, W), output ``mask`` (1, 1, H, W); H and W fixed at
    ``size``, or left open (None)."""
    side: int | str = size if size is not None else "side"
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, side, side])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, side, side])
    mean = helper.make_node("ReduceMean", ["image"], ["mask"], axes=[1], keepdims=1)
    graph = helper.make_graph([mean], "brightness", [image], [mask])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
