"""The embedded synthetic world: known true preferences, so models can be judged against an oracle."""

from pipelines.synthetic.generate import TRUTH_DIR, GenerateSummary, generate
from pipelines.synthetic.presets import PRESETS, Preset, TruthParams
from pipelines.synthetic.truth import GroundTruth

__all__ = [
    "PRESETS",
    "TRUTH_DIR",
    "GenerateSummary",
    "GroundTruth",
    "Preset",
    "TruthParams",
    "generate",
]
