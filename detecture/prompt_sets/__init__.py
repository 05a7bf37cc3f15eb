"""Prompt sets: the conversation a head was trained with, kept as data (one YAML file per set, shipped with the
package) rather than string constants, because a trained head depends on its prompts byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from ..errors import CheckpointError, InputError

PROMPT_SET_FIELDS = ("name", "source", "system", "user", "autonomous", "oracle_one", "oracle_many", "query")
DEFAULT_PROMPT_SET = "detecture"
PUBLISHED_PROMPT_SET = "published-neurips2026"


@dataclass(frozen=True)
class PromptSet:
    """System prompt + user template; ``{regime}`` in ``user`` is replaced by the regime phrase, in which
    ``{count}`` (oracle) or ``{query}`` (query regime) are filled in. ``query`` None: the set has no query regime."""

    name: str
    source: str
    system: str
    user: str
    autonomous: str
    oracle_one: str
    oracle_many: str
    query: str | None = None

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "PromptSet":
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: a prompt set must be a mapping with keys {', '.join(PROMPT_SET_FIELDS)}")
        missing = [k for k in PROMPT_SET_FIELDS[:-1] if not isinstance(raw.get(k), str)]
        unknown = sorted(set(raw) - set(PROMPT_SET_FIELDS))
        if missing or unknown:
            raise CheckpointError(f"{where}: prompt set has missing or non-text keys {missing} and unknown keys "
                                  f"{unknown}")
        return cls(**raw)

    def regime_phrase(self, kind: str, count: int | None = None, text: str | None = None) -> str:
        if kind == "autonomous":
            return self.autonomous
        if kind == "oracle":
            return (self.oracle_one if count == 1 else self.oracle_many).replace("{count}", str(count))
        if self.query is None:
            raise InputError(f"the head's prompt set '{self.name}' has no query regime (--query); use --k instead")
        return self.query.replace("{query}", text or "")

    def user_prompt(self, kind: str, count: int | None = None, text: str | None = None) -> str:
        return self.user.replace("{regime}", self.regime_phrase(kind, count, text))


@lru_cache(maxsize=None)
def prompt_set(name: str) -> PromptSet:
    """A prompt set shipped with the package (``detecture/prompt_sets/<name>.yaml``)."""
    available = sorted(p.name[:-5] for p in resources.files("detecture.prompt_sets").iterdir()
                       if p.name.endswith(".yaml"))
    if name not in available:
        raise InputError(f"unknown prompt set {name!r}; available: {', '.join(available)}")
    text = resources.files("detecture.prompt_sets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return PromptSet.from_dict(yaml.safe_load(text), f"detecture/prompt_sets/{name}.yaml")
