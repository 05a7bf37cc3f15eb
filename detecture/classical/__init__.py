"""The classical (weightless, CPU-only) texture segmenter shared by ``segment``, the API, the demo and the benchmark."""

from .describe import describe_regions, measure_regions
from .segmenter import segment_texture, texture_features

__all__ = ["describe_regions", "measure_regions", "segment_texture", "texture_features"]
