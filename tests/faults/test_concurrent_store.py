"""Two commands started together on a fresh workdir share one MLflow store: opening it
(MLflow creates the SQLite schema and the experiment on first use) takes turns."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

OPEN_STORE = ("import sys; from pipeline.config import load_config; "
              "from pipeline.tracking import Tracker; "
              "Tracker(load_config(None, [f'workdir={sys.argv[1]}', 'experiment=both']))")


@pytest.fixture
def fresh_workdir(tmp_path):
    """An empty folder, in memory where the machine has /dev/shm (SQLite's fsyncs while
    MLflow builds the schema take seconds on a busy disk)."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as folder:
        yield Path(folder)


def test_two_runs_open_a_fresh_mlflow_store_at_once(fresh_workdir):
    tmp_path = fresh_workdir
    import mlflow

    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(tmp_path)],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_experiment_by_name("both") is not None
