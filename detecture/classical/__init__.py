"""The classical (weightless, CPU-only) texture segmenter shared by ``segment``, the API, the demo and the benchmark."""

from .describe import describe_regions, measure_regions
from .params import ClassicalParams, load_params
from .segmenter import segment_texture, texture_features

__all__ = ["ClassicalParams", "describe_regions", "load_params", "measure_regions", "segment_texture",
           "texture_features"]
