"""Helpers shared by the tests (importable as `helpers.<module>`; tests/ is on sys.path)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root
