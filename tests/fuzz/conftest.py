"""Fixtures of the fuzz tests: the tiny model, a seeded mutator over the real DICOM files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fuzz.mutations import CANARY, TRAVERSAL, Mutator
from tests.helpers.tiny import make_tiny_checkpoint

SEED = 17
OUTPUT_NAME = re.compile(r"(SR|PDF)_[0-9.]{1,64}\.dcm|rejection_([0-9a-f]{16}|unreadable)\.json")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint (fast to load and run)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture
def mutator(dicom_dir: Path) -> Mutator:
    """Mutations of the real files, seeded (the same mutants on every run)."""
    return Mutator(dicom_dir, SEED)


def leaks(text: str) -> list[str]:
    """The canary strings found in ``text`` (received values that must never appear there)."""
    return [word for word in (CANARY, TRAVERSAL) if word in text]
