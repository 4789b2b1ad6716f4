"""``--report-to``: the scalars of ``metrics.jsonl`` sent, as they are written, to the experiment trackers people
already open, each through its own library and into a local store:

    tensorboard   event files in ``<run>/tensorboard/`` (``tensorboard --logdir <run>``); a requirement, the default
    trackio       trackio's local store (``$TRACKIO_DIR``, else ``~/.cache/huggingface/trackio``), project and run
                  named after the run folder (``trackio show``); ``pip install trackio``
    mlflow        ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` in the current folder, what
                  ``mlflow ui`` opens there; experiment "rhizome", run named after the run folder;
                  ``pip install mlflow``

Tags are ``train/<field>`` and ``eval/<field>`` for every number of a record but its step and clock time.
A resumed run continues the same tracker run: TensorBoard hides the events past the checkpoint (``purge_step``),
trackio and MLflow reopen the run of the same name (their points past the checkpoint are written again).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rhizome.errors import UserError
from rhizome.runs import HEARTBEAT_SECONDS

TENSORBOARD_DIR = "tensorboard"
MLFLOW_EXPERIMENT = "rhizome"
_PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow"}
_NOT_SCALARS = ("kind", "step", "time")


def scalars(record: dict) -> dict[str, float]:
    """``{"train/loss": ..., ...}``: the record's numbers under the tags every tracker gets."""
    return {f"{record['kind']}/{key}": float(value) for key, value in record.items()
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)}


def check_trackers(names: list[str]) -> list[str]:
    """The trackers asked for ("none" dropped); a UserError naming the pip command when a package is missing."""
    trackers = list(dict.fromkeys(name for name in names if name != "none"))
    for name in trackers:
        if name not in _PACKAGES:
            raise UserError(f"--report-to {name}: unknown tracker; choose from none, {', '.join(_PACKAGES)}")
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise UserError(f"--report-to {name} needs the {_PACKAGES[name]} package: run "
                            f"`pip install {_PACKAGES[name]}` in this environment, or drop {name} from --report-to")
    return trackers


class TensorBoard:
    def __init__(self, run_dir: Path, resumed_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events a killed session wrote past the checkpoint being resumed
        # (from step 0, all of them: a fresh start).
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=resumed_step + 1 if resumed_step
                                    else 0, flush_secs=int(HEARTBEAT_SECONDS))

    def log(self, record: dict) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record["step"], walltime=record["time"])

    def close(self) -> None:
        self.writer.close()


class Trackio:
    def __init__(self, run_dir: Path, config: dict):
        import trackio

        name = run_dir.resolve().name
        self.run = trackio.init(project=name, name=name, config=config, resume="allow", embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(self, run_dir: Path, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(MLFLOW_EXPERIMENT))
        folder = str(run_dir.resolve())
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`rhizome.run_dir` = '{folder}'",
                                        max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=run_dir.resolve().name,
                                         tags={"rhizome.run_dir": folder})
            self.run_id = run.info.run_id
            # Parameters cannot change in MLflow: logged once, from the settings the run started with.
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in config.items()])

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        stamp = int(record["time"] * 1000)
        # Asynchronous: a database write per step would cost the step milliseconds; close() waits for them.
        self.client.log_batch(self.run_id, metrics=[Metric(tag, value, stamp, record["step"])
                                                    for tag, value in scalars(record).items()], synchronous=False)

    def close(self) -> None:
        import mlflow

        mlflow.flush_async_logging()
        self.client.set_terminated(self.run_id)


def open_trackers(names: list[str], run_dir: Path, resumed_step: int, config: dict) -> list:
    """The trackers of ``--report-to``, opened for this run (``config``: the settings, as trackers' params)."""
    opened = []
    for name in check_trackers(names):
        if name == "tensorboard":
            opened.append(TensorBoard(run_dir, resumed_step))
        elif name == "trackio":
            opened.append(Trackio(run_dir, config))
        else:
            opened.append(MLflow(run_dir, config))
    return opened
