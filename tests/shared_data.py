"""Where the real data sets shared beside the checkout live (``../shared/data``), for the tests that read them."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
