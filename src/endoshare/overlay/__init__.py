"""Burned-in text (recorder overlays): find it, mask it, check the mask.  See :mod:`.find`."""
