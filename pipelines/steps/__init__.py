"""The pipeline's steps, one module each: validate, features, train, index, evaluate, gate,
promote, and `pipeline` (all of them in one process, the run lock, the re-run reset).

Each step is a plain function over the config and a `pipelines.layout.RunLayout` that returns
a small JSON-able dict (paths, counts, decisions: what an orchestrator may pass between tasks),
never data. The CLI commands, the Airflow DAG's tasks, `run`, the simulation and the benches
call these functions and nothing below them, so every entry point applies the same rules.
"""
