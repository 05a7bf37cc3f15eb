"""``detecture`` (trained Bridge grounding) and ``detecture-text`` (zero-shot: descriptions → SAM3's text encoder).

Both wrap :class:`detecture.pipeline.DetecturePipeline`. The pipeline's logits are already relative to its learned
dustbin, so the benchmark's static dustbin at 0 reproduces the pipeline's own partition. The ``given-k`` mode asks
Qwen3-VL for "exactly N" textures, ``open-k`` for "between 1 and 6".

``--tiny`` swaps in tiny random backbones (offline plumbing checks; the numbers mean nothing). Tiny generation emits
no texture lines, so the response is forced: one generic line per region, N = the oracle K (or K_gt when
autonomous, since a random model cannot count anyway).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import CheckpointError
from ..regimes import SampleRegime
from .base import Method, MethodOutput, torch_device


class _DetectureMethod(Method):
    grounding = "bridge"

    def check(self) -> None:
        if self.grounding == "bridge" and not self.options.tiny and self.options.head is None:
            raise CheckpointError("method 'detecture' needs a trained head: pass --head PATH "
                                  "(or benchmark 'detecture-text', which needs no trained weights)")
        if self.grounding == "bridge" and self.options.head is not None:
            from ...bridge.head import default_qwen, read_head_config

            config = read_head_config(self.options.head)
            if not self.options.tiny and not self.options.models.get("qwen"):
                default_qwen(config, self.options.head)  # refuses a head trained on tiny backbones, before any cell

    def models(self) -> dict[str, str]:
        if self.options.tiny:
            return {}
        from ...backbones import DEFAULT_SAM3
        from ...bridge.head import default_qwen, read_head_config

        head = self.options.head if self.grounding == "bridge" else None
        qwen = self.options.models.get("qwen") or default_qwen(read_head_config(head) if head else None, head)
        return {"Qwen3-VL model": qwen, "SAM3 model": self.options.models.get("sam3") or DEFAULT_SAM3}

    def settings(self) -> dict[str, Any]:
        """The head by path and by the content of its files (a head retrained into the same folder is another
        experiment; a copy of it is not), the backbones and, for tiny random ones, the seed that draws them."""
        from ...bridge.head import head_digest
        from ...utils.paths import resolved

        head = self.options.head if self.grounding == "bridge" else None
        return {"head": str(resolved(head)) if head is not None else None,
                "head_files": head_digest(head)[:16] if head is not None else None, "tiny": self.options.tiny,
                "seed": self.options.seed if self.options.tiny else None,
                "qwen": self.options.models.get("qwen"), "sam3": self.options.models.get("sam3")}

    def load(self) -> None:
        from ...pipeline import DetecturePipeline

        head = self.options.head if self.grounding == "bridge" else None
        if self.options.tiny:
            self.loaded["pipe"] = DetecturePipeline.tiny(seed=self.options.seed, head=head)
            return
        kwargs = {k: v for k, v in (("qwen", self.options.models.get("qwen")),
                                    ("sam3", self.options.models.get("sam3"))) if v}
        self.loaded["pipe"] = DetecturePipeline.from_pretrained(head=head, device=torch_device(self.options),
                                                                **kwargs)

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        from ...prompts import format_response

        forced = None
        if self.options.tiny:
            n = regime.k if regime.k is not None else max(regime.k_gt, 1)
            forced = [format_response([f"Texture of region {i + 1}, tiny model check" for i in range(n)])]
        result = self.loaded["pipe"].segment([image], regime.as_regime(), grounding=self.grounding,
                                              forced_responses=forced)[0]
        return MethodOutput(result.logits, list(result.descriptions), model_logits=result.region_logits)


class DetectureBridgeMethod(_DetectureMethod):
    kind = "detecture"
    grounding = "bridge"


class DetectureTextMethod(_DetectureMethod):
    kind = "detecture-text"
    grounding = "text"
