"""Which detectors exist, where their weights are, and how to build one by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError
from .base import Detector

DETECTOR_NAMES = ("builtin", "oobnet")


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    description: str
    weights_path: str | None
    ready: bool
    problem: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "weights_path": self.weights_path,
                "ready": self.ready, "problem": self.problem}


def create_detector(name: str, weights: str | Path | None = None) -> Detector:
    """Build the detector called ``name``; ``weights`` overrides where its weights are read from."""
    if name == "builtin":
        from .builtin import BuiltinDetector
        return BuiltinDetector() if weights is None else BuiltinDetector(weights)
    if name == "oobnet":
        from .oobnet import OOBNetDetector
        return OOBNetDetector(weights)
    raise ValueError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTOR_NAMES)}")


def list_detectors() -> tuple[DetectorInfo, ...]:
    """Every known detector, with whether it can run now (weights present and loadable)."""
    infos = []
    from . import builtin, oobnet
    infos.append(_probe_info("builtin", "Built-in learned model (EfficientNet-Lite0 + trained head, ONNX), "
                                        "shipped with Endoshare (no download)", builtin.default_model_path()))
    # Checking names and shapes is enough to say "ready" and avoids reading 68 MB of weights.
    status = oobnet.weights_status()
    infos.append(DetectorInfo("oobnet", "OOBNet (Lavanchy et al. 2023), published Keras weights run in numpy",
                              str(status.path), status.ready, status.problem))
    return tuple(infos)


def _probe_info(name: str, description: str, path: Path) -> DetectorInfo:
    try:
        create_detector(name, path)
    except (WeightsError, FileNotFoundError) as exc:
        return DetectorInfo(name, description, str(path), False, str(exc))
    return DetectorInfo(name, description, str(path), True)
