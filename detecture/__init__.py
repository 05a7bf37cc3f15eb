"""Detecture: VLM-guided multi-texture segmentation.

Qwen3-VL describes the K texture regions of an image, one ``TEXTURE_k: <description> <|seg|>`` line each; a small
learned Bridge maps each ``<|seg|>`` hidden state into SAM3's prompt space, and SAM3 turns the prompts into a
partition of the image. Heavy modules (torch, transformers) are imported lazily so ``detecture --help`` is instant.
"""

__version__ = "0.1.0"
