"""limner: a self-hosted image-generation API server that speaks the hosted APIs' dialects."""

__version__ = "0.1.0"
