"""Endoshare: turn raw surgical recordings into videos that can be shared without exposing anyone."""

__version__ = "0.1.0"
