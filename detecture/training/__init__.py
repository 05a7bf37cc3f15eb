"""``detecture train``: the training system for the Bridge, dustbin, mask head, Qwen LoRA and ``<|seg|>`` rows.

Modules: :mod:`.config` (YAML ↔ dataclasses), :mod:`.dataset` / :mod:`.augment` / :mod:`.batching` (data),
:mod:`.losses` (Shifted-Zero LM, Hungarian mask loss), :mod:`.trainable` (PEFT surface, parameter groups),
:mod:`.model` (the forward pass), :mod:`.schedule` (per-group lr), :mod:`.checkpoint`, :mod:`.feature_cache`,
:mod:`.monitor`, :mod:`.evaluate` and :mod:`.loop` (the accelerate training loop).
"""
