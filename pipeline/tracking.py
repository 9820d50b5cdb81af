"""MLflow tracking: a parent run per CLI invocation, a nested run per stage.

The default store is embedded (`sqlite:///<workdir>/mlflow.db`, artifacts under
`<workdir>/mlartifacts`), so nothing needs a server; any MLflow URI works via
`tracking.uri`. With `tracking.enabled=false` every call is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts import check_workdir
from pipeline.config import Config, flatten, to_dict
from pipeline.errors import DrivecastError, StageError

MAX_PARAM_CHARS = 500
PARAMS_PER_CALL = 100
STORE_LOCK = ".mlflow-store.lock"  # in the workdir: taken while a process opens the store


class Tracker:
    """Thin shell over the MLflow fluent API, bound to one experiment and store."""

    def __init__(self, cfg: Config):
        self.enabled = cfg.tracking.enabled
        self.uri = cfg.tracking_uri
        self.experiment_id: str | None = None
        check_workdir(Path(cfg.workdir))
        if self.enabled:
            with store_turn(Path(cfg.workdir)):
                self._connect_or_refuse(cfg)

    def _connect_or_refuse(self, cfg: Config) -> None:
        try:
            self._connect(cfg)
        except DrivecastError:
            raise
        except Exception as err:  # MLflow and its database layer raise many types here
            raise StageError(f"tracking store {self.uri} cannot be used ({_one_line(err)}): "
                             f"check tracking.uri, or set tracking.enabled=false") from None

    def _connect(self, cfg: Config) -> None:
        _quiet_mlflow_logs()
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        found = mlflow.get_experiment_by_name(cfg.experiment)
        if found is None:
            location = None
            if not cfg.tracking.uri:  # embedded store: keep artifacts beside the database
                location = (Path(cfg.workdir).resolve() / "mlartifacts").as_uri()
            self.experiment_id = mlflow.create_experiment(cfg.experiment, location)
        else:
            self.experiment_id = found.experiment_id
        mlflow.set_experiment(experiment_id=self.experiment_id)

    @contextlib.contextmanager
    def run(self, name: str, params: Mapping[str, Any] | None = None,
            nested: bool = False) -> Iterator[str | None]:
        """Open a (nested) run; yields its run id (None when tracking is off)."""
        if not self.enabled:
            yield None
            return
        import mlflow

        with mlflow.start_run(run_name=name, nested=nested) as active:
            if params:
                self.log_params(params)
            yield active.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        items = [(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), PARAMS_PER_CALL):
            mlflow.log_params(dict(items[start:start + PARAMS_PER_CALL]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled:
            return
        import mlflow

        clean = {_metric_name(k): float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and v == v}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_dir(self, path: Path) -> None:
        """Upload a stage directory's files (small ones; datasets are referenced, not copied)."""
        if not self.enabled:
            return
        import mlflow

        for file in sorted(Path(path).rglob("*")):
            if file.is_file() and file.suffix != ".parquet" and not file.name.startswith("."):
                rel = file.parent.relative_to(path)
                mlflow.log_artifact(str(file), artifact_path=None if rel == Path(".") else str(rel))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags(dict(tags))


@contextlib.contextmanager
def store_turn(workdir: Path) -> Iterator[None]:
    """One process at a time opens the store: MLflow creates a fresh SQLite store's schema
    (and an experiment) on first use, and two processes doing it at once collide."""
    with open(workdir / STORE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def config_params(section: Any, prefix: str) -> dict[str, Any]:
    """Flattened params of one config section, e.g. {'ingest.episodes': 40}."""
    tree = to_dict(section)
    return flatten(tree, f"{prefix}.") if isinstance(tree, dict) else {prefix: tree}


def _metric_name(name: str) -> str:
    # MLflow allows '/', so `merge/fde_3s` stays readable; other odd characters become '_'.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _quiet_mlflow_logs() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)
