"""Shared loading policy for hub models: device/dtype defaults, attention backend, and readable access errors."""

from __future__ import annotations

import errno
import functools
import importlib.util
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlparse

import torch

from ..errors import ModelAccessError

T = TypeVar("T")

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT = 3.0  # seconds; the hub client's own retries take a minute to give up
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# OSErrors of the machine, not the model: a full disk while downloading is no wrong model id. They pass through as
# environment errors (exit 3, "run it again"; detecture.utils.parallel) instead of becoming a ModelAccessError.
SYSTEM_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})


def recorded_name(repo: str) -> str:
    """The name a loaded model is known by, and recorded under in a head trained on it: a local folder as its
    absolute path (a relative one would only load again from the same working folder), a hub id as given."""
    return str(Path(repo).resolve()) if Path(repo).is_dir() else repo


def default_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on GPUs (what the models were trained in), fp32 on CPU (bf16 matmuls are slow there)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        try:
            return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                    "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]
        except KeyError:
            raise ModelAccessError(f"unknown dtype {dtype!r}; use bf16, fp16 or fp32") from None
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def default_attn_implementation(device: torch.device, requested: str | None = None) -> str:
    """FlashAttention-2 when installed on a GPU, else PyTorch SDPA (always available)."""
    if requested:
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


@contextmanager
def attention_implementation(model: torch.nn.Module, implementation: str) -> Iterator[None]:
    """Temporarily switch the attention backend (FlashAttention cannot take the custom 4-D re-encode mask)."""
    current = model.config._attn_implementation
    if current == implementation or current in ("sdpa", "eager"):
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


@functools.cache
def _endpoint_reachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT).close()
    except OSError:
        return False
    return True


def use_cache_only_if_hub_unreachable(repo: str) -> None:
    """Before a hub id is loaded: if the hub cannot be reached, switch the hub client to offline mode for this
    process, so cached models load at once and missing ones fail at once, instead of after a minute of retries with
    one warning per attempt. ``HF_HUB_OFFLINE=1`` skips the check; behind a proxy it is not made (the proxy decides)."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or Path(repo).expanduser().exists() or any(map(os.environ.get, PROXY_VARIABLES)):
        return
    if not _endpoint_reachable(constants.ENDPOINT):
        log.warning("the model hub (%s) cannot be reached; using the local cache only (HF_HUB_OFFLINE=1 skips this "
                    "check)", constants.ENDPOINT)
        constants.HF_HUB_OFFLINE = True


def _print_hub_warnings_once() -> None:
    """The hub client adds its own stderr handler and also passes records on to the root logger the CLI configures,
    so each of its warnings would be printed twice; when the root logger prints, the client's handler goes."""
    from huggingface_hub.utils import logging as hub_logging

    hub = hub_logging.get_logger()
    if logging.getLogger().handlers and hub.propagate:
        hub.handlers.clear()


def load_from_hub(what: str, repo: str, loader: Callable[[], T]) -> T:
    """Run a ``from_pretrained`` call, turning hub and model-folder failures into one actionable message (a failing
    disk or a permission stays the OSError it is: :data:`SYSTEM_FAULTS`)."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    _print_hub_warnings_once()
    use_cache_only_if_hub_unreachable(repo)
    try:
        return loader()
    except GatedRepoError:
        raise ModelAccessError(
            f"{what} '{repo}' is gated: request access on its Hugging Face page (https://huggingface.co/{repo}), "
            "then log in with `hf auth login` or set HF_TOKEN; or pass a local folder with the weights"
        ) from None
    except RepositoryNotFoundError:
        raise ModelAccessError(
            f"{what} '{repo}' was not found (wrong id, or a private repo and no token: set HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:
        raise ModelAccessError(_not_cached(what, repo)) from None
    except OSError as exc:
        if exc.errno in SYSTEM_FAULTS:
            raise
        reason = " ".join(str(exc).split())  # transformers' messages span several lines; the CLI prints one
        raise ModelAccessError(f"could not load {what} '{repo}': {reason}") from None


def check_loadable(what: str, repo: str) -> None:
    """Refuse, in milliseconds and before any model loads, a model that cannot load while the hub is out of reach
    (``HF_HUB_OFFLINE=1``, or no connection: :func:`use_cache_only_if_hub_unreachable`): no local folder, and not in
    the local cache. For a run that loads it only after hours of other work (``bench``'s later methods). A reachable
    hub is not asked: gated access or a wrong id are reported when the model loads."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(repo).expanduser().is_dir():
        return
    use_cache_only_if_hub_unreachable(repo)
    if not constants.is_offline_mode():
        return
    try:
        cached = try_to_load_from_cache(repo, "config.json")
    except ValueError:  # not of a hub id's form: a folder path that does not exist
        raise ModelAccessError(f"{what} '{repo}': no such folder") from None
    if not isinstance(cached, str):
        raise ModelAccessError(_not_cached(what, repo))


def _not_cached(what: str, repo: str) -> str:
    return (f"{what} '{repo}' is not in the local cache and the hub cannot be reached (offline?); download it on a "
            "connected machine with `hf download` and pass the folder path")


def bitsandbytes_config(quantization: str | None, compute_dtype: torch.dtype):
    """A ``BitsAndBytesConfig`` for 4-bit (NF4, QLoRA-style) or 8-bit Qwen, or None."""
    if quantization is None:
        return None
    if quantization not in ("4bit", "8bit"):
        raise ModelAccessError(f"quantization must be '4bit' or '8bit', got {quantization!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelAccessError(
            f"{quantization} quantization needs bitsandbytes: pip install 'detecture[quantization]' (GPU only)"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)
