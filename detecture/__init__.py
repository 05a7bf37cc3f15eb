"""Detecture: VLM-guided multi-texture segmentation.

Qwen3-VL describes the K texture regions of an image, one ``TEXTURE_k: <description> <|seg|>`` line each; a small
learned Bridge maps each ``<|seg|>`` hidden state into SAM3's prompt space, and SAM3 turns the prompts into a
partition of the image. Heavy modules (torch, transformers) are imported lazily so ``detecture --help`` is instant.
"""

__version__ = "0.1.0"


def segment(image, method: str = "classical", k=None, query=None, **options):
    """Segment one image (path, PIL image or array) into texture regions; see :func:`detecture.api.segment`.

    Defined here with a deferred import so ``import detecture`` stays cheap (no torch, no scikit-learn).
    """
    from .api import segment as _segment

    return _segment(image, method=method, k=k, query=query, **options)
