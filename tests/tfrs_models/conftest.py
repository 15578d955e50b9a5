"""TensorFlow-side fixtures (TF is imported only by these tests)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="session")
def feature_set(small_features):
    from tfrs_models.data import FeatureSet

    return FeatureSet.load(small_features.features_dir)


@pytest.fixture(scope="session")
def batch(feature_set):
    from pipelines.config import TrainConfig
    from tfrs_models.data import train_dataset

    return next(iter(train_dataset(feature_set, TrainConfig(batch_size=64), shuffle=False)))
