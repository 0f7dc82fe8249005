"""Background removal for models that paint no alpha: an ONNX matting model the operator supplies.

A ``[models.matting]`` table names an ``.onnx`` file of a salient-object or matting network (U²-Net,
IS-Net, BiRefNet, RMBG and the like: one RGB image in, one foreground map out). When a request asks for
``background: "transparent"``, each finished image goes through it and the map becomes the image's alpha
channel; the colour pixels stay as the model painted them. onnxruntime runs it on the CPU (or the GPU
where onnxruntime-gpu is installed), loaded on first use and then kept."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from limner.core.errors import ModelNotAvailable

DEFAULT_SIZE = 1024
"""The input side for a model whose input shape leaves it open."""


class Matting:
    """One ONNX matting model: ``cut_out(image)`` gives the image with its foreground map as alpha."""

    def __init__(
        self,
        path: Path,
        size: int | None = None,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        self.path = path
        self.size = size
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self._session: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        """The onnxruntime session, made on first use (a file it cannot read is a ``ModelNotAvailable``)."""
        with self._lock:
            if self._session is None:
                import onnxruntime

                try:
                    self._session = onnxruntime.InferenceSession(
                        str(self.path), providers=onnxruntime.get_available_providers()
                    )
                except Exception as exc:  # onnxruntime raises its own exception types, one per failure
                    raise ModelNotAvailable(f"Matting model {self.path.name} could not be loaded: {exc}") from exc
            return self._session

    def input_size(self, session: Any) -> tuple[int, int]:
        """(width, height) the model takes: its own where the file fixes it, else ``size``."""
        shape = session.get_inputs()[0].shape
        height, width = shape[2], shape[3]
        fallback = self.size or DEFAULT_SIZE
        return (width if isinstance(width, int) else fallback, height if isinstance(height, int) else fallback)

    def mask(self, image: Image.Image) -> Image.Image:
        """The foreground map of ``image`` at its size, 0 (background) to 255 (foreground)."""
        session = self.load()
        width, height = self.input_size(session)
        pixels = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), np.float32)
        tensor = ((pixels.transpose(2, 0, 1) / 255.0 - self.mean) / self.std)[np.newaxis].astype(np.float32)
        output = session.run(None, {session.get_inputs()[0].name: tensor})[0]
        pred = np.asarray(output, dtype=np.float32).reshape(output.shape[-2], output.shape[-1])
        low, high = float(pred.min()), float(pred.max())
        pred = (pred - low) / (high - low) if high > low else np.ones_like(pred)
        return Image.fromarray((pred * 255.0).round().astype(np.uint8), "L").resize(
            image.size, Image.Resampling.BILINEAR
        )

    def cut_out(self, image: Image.Image) -> Image.Image:
        """``image`` as RGBA, its alpha the model's foreground map."""
        rgba = image.convert("RGBA")
        rgba.putalpha(self.mask(image))
        return rgba
