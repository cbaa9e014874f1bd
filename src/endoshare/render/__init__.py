"""Rendering the merged, redacted timeline into a scrubbed MP4 (stream copy or re-encode)."""

from .common import EncodeSettings, Redaction, RenderResult

__all__ = ["EncodeSettings", "Redaction", "RenderResult"]
