"""Frozen backbones: Qwen3-VL (describes the textures) and SAM3 (turns prompts into dense masks).

Both load from a hub id or a local folder with ``from_pretrained``; :mod:`.tiny` builds the *same classes* from tiny
random configs with an offline tokenizer, for tests and for ``--tiny`` runs on machines without the weights.
"""

# The public checkpoints every entry point and the training config default to (decided here, once).
DEFAULT_QWEN = "Qwen/Qwen3-VL-8B-Instruct"
DEFAULT_SAM3 = "facebook/sam3"
# The name tiny backbones carry, and so the model a head trained on them records.
TINY_NAME = "tiny"
# Tokens Qwen may generate per image unless told otherwise: six texture lines with room to spare.
DEFAULT_MAX_NEW_TOKENS = 300
