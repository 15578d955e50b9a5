"""ScaNN index over item embeddings: size-adaptive build, recall-targeted tuning, serialization
and search (`scann_index.index`)."""
