"""Frozen backbones: Qwen3-VL (describes the textures) and SAM3 (turns prompts into dense masks).

Both load from a hub id or a local folder with ``from_pretrained``; :mod:`.tiny` builds the *same classes* from tiny
random configs with an offline tokenizer, for tests and for ``--tiny`` runs on machines without the weights.
"""
