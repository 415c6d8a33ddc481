"""Fixtures shared by test files."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def load_script(tmp_path, monkeypatch):
    """Load scripts/<name>.py as a module whose repository root (its REPO) is tmp_path."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setattr(module, "REPO", tmp_path)
        return module

    return load
