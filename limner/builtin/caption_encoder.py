"""The built-in model's caption encoder: plain words to the emoji they describe, trained by limner from scratch.

No pretrained language model: a prompt becomes word stems (Snowball's English stemmer), stem pairs and the
character 3- to 5-grams of each word, hashed into one embedding table (so a word never seen in training still
lands near the words it shares pieces with: "spaceship" near "space"); the weighted sum goes through one
linear layer to a unit vector, compared by cosine with one learned vector per emoji. Trained on the CLDR
names, keywords and shortcodes of every emoji (``limner.builtin.train_encoder``). Words that describe the
medium rather than the subject ("a picture of", "emoji", "please") are dropped before any of that.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib
from functools import lru_cache

import snowballstemmer
import torch
import torch.nn.functional as F
from torch import nn

BUCKETS = 1 << 16
DIM = 64
NGRAMS = (3, 4, 5)
STOPWORDS = frozenset(
    """
    a an the of with and or for to in on at by from as is are be it its this that these those some any
    one from into onto very really just so another other their his her them they he she who which what
    there here has have was were been being do does me my i we you your our please want would like show
    give make draw create generate render need see picture pic image photo photograph emoji emojis icon
    drawing illustration sticker clipart art
    """.split()  # noqa: SIM905 - a word list reads best as words
)
"""Words about the request or the medium, never about the subject."""
_WORD = re.compile(r"[a-z0-9]+")
_stemmer = snowballstemmer.stemmer("english")


def words(text: str) -> list[str]:
    """Lower-case ASCII words of ``text`` (accents dropped), stopwords removed."""
    plain = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(char for char in plain if not unicodedata.combining(char))
    return [word for word in _WORD.findall(plain) if word not in STOPWORDS]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def _bucket(feature: str) -> int:
    return zlib.crc32(feature.encode()) % BUCKETS


@lru_cache(maxsize=65536)
def word_features(word: str) -> tuple[tuple[int, float], ...]:
    """The stem (weight 1) and the character n-grams of ``<word>`` (weight 1 in all)."""
    marked = f"<{word}>"
    grams = [marked[i : i + n] for n in NGRAMS for i in range(len(marked) - n + 1)]
    share = 1.0 / max(1, len(grams))
    return ((_bucket("w:" + stem(word)), 1.0), *((_bucket("c:" + gram), share) for gram in grams))


def features(text: str) -> tuple[list[int], list[float]]:
    """Hashed feature indices and weights of one caption (stems, stem pairs, character n-grams)."""
    tokens = words(text)
    indices: list[int] = []
    weights: list[float] = []
    for word in tokens:
        for index, weight in word_features(word):
            indices.append(index)
            weights.append(weight)
    stems = [stem(word) for word in tokens]
    for first, second in itertools.pairwise(stems):
        indices.append(_bucket(f"b:{first}_{second}"))
        weights.append(1.0)
    return indices, weights


def batch_features(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EmbeddingBag inputs for ``texts``: (indices, offsets, weights); an empty caption is an empty bag."""
    indices: list[int] = []
    weights: list[float] = []
    offsets: list[int] = []
    for text in texts:
        offsets.append(len(indices))
        found, weight = features(text)
        indices.extend(found)
        weights.extend(weight)
    return torch.tensor(indices, dtype=torch.long), torch.tensor(offsets, dtype=torch.long), torch.tensor(weights)


class CaptionEncoder(nn.Module):
    """Captions -> unit vectors; ``emoji`` holds one learned unit vector per emoji of the model."""

    def __init__(self, count: int, buckets: int = BUCKETS, dim: int = DIM) -> None:
        super().__init__()
        self.table = nn.EmbeddingBag(buckets, dim, mode="sum", sparse=True)
        nn.init.zeros_(self.table.weight)  # a feature never trained adds nothing
        self.project = nn.Linear(dim, dim)
        self.emoji = nn.Parameter(torch.randn(count, dim) * 0.1)
        self.scale = nn.Parameter(torch.tensor(3.0))  # log of the softmax temperature's inverse

    def encode(self, texts: list[str]) -> torch.Tensor:
        indices, offsets, weights = batch_features(texts)
        pooled = self.table(indices, offsets, per_sample_weights=weights.to(self.table.weight.dtype))
        counts = torch.diff(offsets, append=torch.tensor([len(indices)]))
        return F.normalize(self.project(pooled), dim=-1) * (counts > 0).unsqueeze(1)  # no words: no direction

    def logits(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), count] similarities, scaled for a softmax over every emoji."""
        return self.scale.exp() * self.encode(texts) @ F.normalize(self.emoji, dim=-1).T

    @torch.inference_mode()
    def scores(self, texts: list[str]) -> torch.Tensor:
        """Cosine similarity of each caption to every emoji, in [-1, 1]; a caption with no known word scores 0."""
        return self.encode(texts) @ F.normalize(self.emoji, dim=-1).T
