"""ScaNN index build, recall-targeted tuning, serialization and search (arrives with the index issue)."""
