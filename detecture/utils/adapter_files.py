"""A saved PEFT adapter folder (LoRA + ``<|seg|>`` rows), checked from its files alone so that a corrupt adapter
inside a head folder is reported before Qwen loads, not as a traceback from inside ``PeftModel.from_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .json_files import read_json_object
from .safetensors_files import tensor_shapes

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def read_adapter_config(adapter: str | Path) -> dict[str, Any]:
    """The adapter's config as a JSON object, after checking its weights file's safetensors header (not the
    tensors: milliseconds); a missing, malformed or cut file is a :class:`CheckpointError` naming it."""
    adapter = Path(adapter)
    config_file, weights_file = adapter / CONFIG_FILE, adapter / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{adapter}: not a PEFT adapter folder (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = read_json_object(config_file, "adapter config")
    tensor_shapes(weights_file)
    return config
