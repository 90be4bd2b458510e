"""Shared test setup: every test gets a private, empty nnbook cache folder."""
import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNBOOK_CACHE", str(tmp_path_factory.mktemp("nnbook-cache")))
    monkeypatch.delenv("NNBOOK_SEED", raising=False)
    monkeypatch.delenv("NNBOOK_DEVICE", raising=False)
