"""Offline, a hub id fails at once with one line instead of after a minute of retries and dozens of warnings."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from detecture.backbones.loading import load_from_hub
from detecture.errors import ModelAccessError


def test_an_unreachable_hub_is_detected_before_any_retry(monkeypatch, caplog, tmp_path):
    from huggingface_hub import constants
    from transformers import AutoConfig

    with socket.socket() as sock:  # a port nothing listens on: the hub's address refuses connections
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(ModelAccessError, match="nobody/not-cached"):
        load_from_hub("test model", "nobody/not-cached", lambda: AutoConfig.from_pretrained("nobody/not-cached"))
    assert time.monotonic() - start < 10
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "cannot be reached; using the local cache only" in messages[0], messages
