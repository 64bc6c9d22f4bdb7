"""Model presets that need no download (see :mod:`rlenv.models.tiny`)."""

from .tiny import TINY_PRESETS, build_tiny_model, build_tiny_tokenizer, create_tiny_model

__all__ = ["TINY_PRESETS", "build_tiny_model", "build_tiny_tokenizer", "create_tiny_model"]
