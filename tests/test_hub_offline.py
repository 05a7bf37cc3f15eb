"""Offline, a hub id fails at once with one line instead of after a minute of retries and dozens of warnings."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from detecture.backbones.loading import check_loadable, load_from_hub
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


@pytest.fixture()
def offline_cache(monkeypatch, tmp_path):
    """The hub out of reach and an empty cache folder, whatever this machine has cached."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_check_loadable_offline_takes_a_folder_or_a_cached_id_and_refuses_others(offline_cache, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    check_loadable("test model", str(folder))
    snapshot = offline_cache / "models--nobody--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (offline_cache / "models--nobody--cached" / "refs").mkdir()
    (offline_cache / "models--nobody--cached" / "refs" / "main").write_text("0" * 40)
    check_loadable("test model", "nobody/cached")
    with pytest.raises(ModelAccessError, match="test model 'nobody/not-cached' is not in the local cache"):
        check_loadable("test model", "nobody/not-cached")
    with pytest.raises(ModelAccessError, match="no such folder"):
        check_loadable("test model", str(tmp_path / "missing" / "weights"))


def test_check_loadable_leaves_a_reachable_hub_to_the_load(monkeypatch, offline_cache):
    """Online, gated access or a wrong id are the load's to report: the check asks the hub nothing."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("detecture.backbones.loading._endpoint_reachable", lambda endpoint: True)
    check_loadable("test model", "nobody/not-cached")
