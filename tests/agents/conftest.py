"""Shared fixtures of the agent tests: the command-line scripts, loaded as modules (``script``
returns the loader, as tests/conftest.py's fixtures return their builders)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (its ``main(argv)`` callable from a test)."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


@pytest.fixture
def script() -> Callable[[str], ModuleType]:
    return load_script


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return load_script("train_agent")
