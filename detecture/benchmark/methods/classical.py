"""``classical`` in the benchmark: adapts :mod:`detecture.classical` to the method protocol."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...classical import ClassicalParams, describe_regions, segment_texture
from ...utils.parallel import one_thread
from ..metrics import pad_logits, partition
from ..regimes import SampleRegime
from .base import Method, MethodOutput


class ClassicalMethod(Method):
    """Gabor + local colour statistics, k-means; no weights, CPU only."""

    kind = "classical"

    def settings(self) -> dict[str, Any]:
        params = self.options.classical_params or ClassicalParams()
        return {"seed": self.options.seed, "classical_params": params.to_dict()}

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        k = regime.exact_k
        with one_thread():
            logits = pad_logits(segment_texture(image, k, seed=self.options.seed,
                                                params=self.options.classical_params), k or 1)
            descriptions = describe_regions(image, partition(logits))
        return MethodOutput(logits, descriptions)
