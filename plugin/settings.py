"""Typed settings of the UAR report application, read from the ``uar:`` key of ``app.yaml``.

The MAP packager only reads the ``application`` and ``resources`` sections of ``app.yaml``; the
application's own settings live beside them under the custom top-level key ``uar`` and are read at
run time with the SDK's config mechanism (``Application.config(path)`` then ``self.kwargs("uar")``).
The settings themselves are defined with the operators that read them
(:class:`operators.settings.AppSettings`); the application composes them from this file.
"""

from __future__ import annotations

from pathlib import Path

from operators.settings import SETTINGS_KEY, AppSettings

__all__ = ["REPO_APP_YAML", "SETTINGS_KEY", "AppSettings"]

# app.yaml beside the package when run from a checkout; /var/holoscan/app.yaml inside a MAP.
REPO_APP_YAML = Path(__file__).resolve().parents[1] / "app.yaml"
