"""The live view's page: self-contained HTML + JS (no external assets) polling /live/state."""

from __future__ import annotations

from pathlib import Path

PAGE = (Path(__file__).parent / "live.html").read_text(encoding="utf-8")
