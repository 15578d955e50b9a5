"""The retraining pipeline as plain Python (no Airflow imports), in layers that import one way
(`docs/architecture.md`; enforced by the import-linter contract in pyproject.toml):

- entry points: `cli` (the `two-tower` command), `simulate`;
- `steps` (validate, features, train, index, evaluate, gate, promote, the whole run) and
  `orchestration` (what the Airflow DAG needs: the Params form, alerts);
- services: `evaluation`, `gate`, `registry`, `recommend`, `serving`;
- domain: `features` (the Beam job), `sources` (readers), `synthetic` (the embedded world),
  with the sibling packages `data_checks`, `tfrs_models`, `scann_index`;
- core: `config`, `contract`, `errors`, `layout`, `schema`, `metrics`, `faults`, `locks`;
- `formats`: TFRecord, Example encoding and decoding, file I/O.
"""

__version__ = "0.1.0"
