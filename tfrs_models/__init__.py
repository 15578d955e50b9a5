"""TFRS two-tower model: towers, retrieval loss, training, export.

TensorFlow Recommenders 0.7.7 needs Keras 2, so the legacy-Keras switch is set before any
TensorFlow import that goes through this package.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
