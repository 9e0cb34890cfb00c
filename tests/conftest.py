"""Shared fixtures: isolated config dirs so the developer's own files never leak into tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    # Keep the host-facts cache shared across tests (probing bwrap each time is slow),
    # but out of the developer's real home.
    cache = os.environ.get("STOCKADE_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
