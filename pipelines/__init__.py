"""The retraining pipeline's steps as plain Python (no Airflow imports).

Modules: `config` (one typed config), `contract` (the data contract), `sources` (readers that
produce a normalized raw snapshot), `synthetic` (a world with known ground truth), `cli`.
"""

__version__ = "0.1.0"
