"""``to_hf()`` masks shown in Gradio's ``AnnotatedImage``: Gradio reads an array mask as opacity in [0, 1], so the
0/255 masks must be divided by 255 (as the README says); given as they are, they come out invisible."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import detecture
from detecture.demo.examples import mosaic_three


def test_to_hf_masks_scaled_to_0_1_are_drawn_opaque_by_annotated_image(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    image = mosaic_three(96)[0]
    regions = detecture.segment(image, method="classical", k=3).to_hf()

    def alphas(masks):
        value = gr.AnnotatedImage().postprocess((image, [(m, r["label"]) for m, r in zip(masks, regions)]))
        return [np.asarray(Image.open(a.image.path))[..., 3] for a in value.annotations]

    inside = [np.asarray(r["mask"]) == 255 for r in regions]
    for alpha, region in zip(alphas([np.asarray(r["mask"]) / 255 for r in regions]), inside):
        assert (alpha[region] == 255).all() and (alpha[~region] == 0).all()
    assert all(alpha.max() <= 1 for alpha in alphas([np.asarray(r["mask"]) for r in regions]))  # 0/255: invisible
