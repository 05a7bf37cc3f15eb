"""The classical (weightless, CPU-only) texture segmenter shared by ``segment``, the API, the demo and the benchmark."""

from .segmenter import segment_texture, texture_features

__all__ = ["segment_texture", "texture_features"]
