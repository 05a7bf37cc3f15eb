"""A demo server on a free local port, shared by the demo tests (started once per module, closed after)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server():
    """(engine, url) of a classical-only demo served on 127.0.0.1."""
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")
    from detecture.demo.app import launch
    from detecture.demo.engine import DemoEngine

    engine = DemoEngine.create()
    app = launch(engine, port=free_port(), block=False, warm_up=False)
    try:
        yield engine, app.local_url
    finally:
        app.close()
        engine.close()


@pytest.fixture()
def corrupt_png(tmp_path) -> Path:
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not image data")
    return path
