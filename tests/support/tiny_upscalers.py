"""Tiny random-weight upscaler files, built by the tests: an ESRGAN (RRDBNet) state dict in the original
ESRGAN key layout, which spandrel recognises by its keys and shapes, written as ``.pth`` or ``.safetensors``."""

from __future__ import annotations

from pathlib import Path

import torch


def rrdbnet_state(
    *, blocks: int = 1, features: int = 8, growth: int = 32, scale: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """An RRDBNet (``RRDB_net`` of ESRGAN's original code) with random weights: ``blocks`` RRDB blocks of three
    dense blocks of five convolutions (growth 32, which spandrel assumes), then ``log2(scale)`` nearest-neighbour
    upsamplings (a 2x model has one)."""
    generator = torch.Generator().manual_seed(seed)

    def conv(out_channels: int, in_channels: int, bias: float = 0.0) -> dict[str, torch.Tensor]:
        weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) / (9 * in_channels) ** 0.5
        return {"weight": weight, "bias": torch.full((out_channels,), bias)}

    state: dict[str, torch.Tensor] = {}

    def put(prefix: str, layer: dict[str, torch.Tensor]) -> None:
        for name, tensor in layer.items():
            state[f"{prefix}.{name}"] = tensor

    put("model.0", conv(features, 3))
    for block in range(blocks):
        for dense in (1, 2, 3):
            for index in range(1, 6):
                out_channels = growth if index < 5 else features
                put(
                    f"model.1.sub.{block}.RDB{dense}.conv{index}.0", conv(out_channels, features + (index - 1) * growth)
                )
    put(f"model.1.sub.{blocks}", conv(features, features))
    upsamplings = {2: 1, 4: 2, 8: 3}[scale]
    index = 3
    for _ in range(upsamplings):
        put(f"model.{index}", conv(features, features))
        index += 3
    put(f"model.{index - 1}", conv(features, features))
    put(f"model.{index + 1}", conv(3, features, bias=0.5))  # mid-grey plus the network's texture, not clamped black
    return state


def write_upscaler(path: Path, **kwargs: int) -> Path:
    """An RRDBNet file at ``path`` (``.pth`` or ``.safetensors``)."""
    state = rrdbnet_state(**kwargs)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
