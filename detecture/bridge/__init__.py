"""The trainable head: Bridge (Qwen width -> SAM3 prompt space), dustbin slot vector and mask head."""

from .head import Bridge, DetectureHead, HeadConfig, MaskHead

__all__ = ["Bridge", "DetectureHead", "HeadConfig", "MaskHead"]
