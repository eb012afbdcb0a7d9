"""``--tracker mlflow``: a run's params, metrics, provenance and best checkpoint in an MLflow tracking
store, by default a local file store (``mlruns/`` in the workspace), or ``MLFLOW_TRACKING_URI``.

Everything is read back from the run's folder (:class:`~pipeline.engine.run_folder.RunFolder`) once it
has trained (and again once it is evaluated): the MLflow run of a folder is found by its tag
``vtl.run_dir``, so logging a run again (after its evaluation, or a resumed training) updates the same
MLflow run instead of adding one. Nothing here keeps process-global state: the tracking URI and a
benchmark's parent run id are arguments (a benchmark passes them to its cells through the task, so
cells in child processes, Ray tasks or Slurm jobs nest under the same parent).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline.engine.run_folder import RunFolder
from pipeline.errors import UserError
from pipeline.provenance import KEY as PROVENANCE

RUN_DIR_TAG = "vtl.run_dir"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs
MAX_PARAM = 500  # MLflow's limit on a param value's length


def tracking_uri(default_store: Path) -> str:
    """``MLFLOW_TRACKING_URI``, else a file store at ``default_store``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_store.resolve().as_uri()


def require_mlflow() -> None:
    """Fail before any work when MLflow is not installed: one line that says how to get it."""
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:
        raise UserError("--tracker mlflow needs MLflow: pip install 'vtl[mlflow]'") from None


def _client(uri: str) -> Any:
    require_mlflow()
    from mlflow.tracking import MlflowClient
    if uri.startswith("file:"):
        # MLflow >= 3.x keeps the file store in "maintenance mode" behind this switch; it is the
        # default store here (a folder, no database or server to set up).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def start_parent(uri: str, experiment: str, name: str, params: dict[str, Any]) -> str:
    """A parent run (a benchmark's) for nested runs; returns its id."""
    client = _client(uri)
    run = client.create_run(_experiment(client, experiment), run_name=name)
    _log_params(client, run.info.run_id, params)
    return run.info.run_id


def end_parent(uri: str, run_id: str, record: dict[str, Any] | None, artifacts: list[Path]) -> None:
    client = _client(uri)
    if record:
        client.log_dict(run_id, record, "provenance.json")
    for path in artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)


def track_run(run: RunFolder, *, uri: str, experiment: str, parent_run_id: str | None = None) -> str:
    """Log ``run``'s config (params), per-epoch history and evaluation metrics, provenance and
    ``best.pt`` to MLflow; returns the MLflow run id."""
    client = _client(uri)
    exp = _experiment(client, experiment)
    found = client.search_runs([exp], filter_string=f"tags.`{RUN_DIR_TAG}` = '{run.train_dir.resolve()}'",
                               max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        tags = {RUN_DIR_TAG: str(run.train_dir.resolve()), **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
        run_id = client.create_run(exp, run_name=run.name, tags=tags).info.run_id
        _log_params(client, run_id, run.config() or {})
        _log_history(client, run_id, run.history())
        if run.best.is_file():
            client.log_artifact(run_id, str(run.best))
    record = run.provenance()
    evaluated = run.eval_metrics()
    if evaluated is not None:
        record = evaluated.pop(PROVENANCE, record)
        _log_metrics(client, run_id, {f"test_{k}": v for k, v in evaluated.items()}, step=0)
    if record:
        client.log_dict(run_id, record, "provenance.json")
        client.set_tag(run_id, "vtl.git_commit", str(record.get("git_commit")))
        client.set_tag(run_id, "vtl.command", str(record.get("command"))[:MAX_PARAM])
    client.set_terminated(run_id)
    return run_id


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = [Param(k, (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_PARAM])
            for k, v in params.items()]
    for i in range(0, len(flat), 100):  # MLflow's limit per batch
        client.log_batch(run_id, params=flat[i:i + 100])


def _log_history(client: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    for record in history:
        _log_metrics(client, run_id, {k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))


def _log_metrics(client: Any, run_id: str, values: dict[str, Any], *, step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
