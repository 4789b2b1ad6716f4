"""What a run tells others while it trains (run.json, heartbeat.json, metrics.jsonl) and how it stops: a STOP file,
an observer's reason, an exception, SIGTERM to train_script.py; max_train_tokens. On the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rhizome.runs import HEARTBEAT_FILE, METRICS_FILE, RUN_STATE_FILE, STOP_FILE
from rhizome.train.config import TrainConfig
from rhizome.train.live import Heartbeat, MetricsLog
from rhizome.train.loop import FineTune


def _config(tiny_model_dir, data_dir, out, **overrides):
    values = dict(model=str(tiny_model_dir), train_file=str(data_dir / "dataset_train.jsonl"),
                  validation_file=str(data_dir / "dataset_validation.jsonl"), output_dir=str(out),
                  cache_dir=str(data_dir / "tokenized_cache"), max_seq_length=256, per_device_train_batch_size=2,
                  gradient_accumulation_steps=2, max_steps=6, learning_rate=3e-3, warmup_steps=1, save_steps=2,
                  eval_steps=3, lora_dropout=0.1, threads=1, plots=False)
    return TrainConfig(**{**values, **overrides})


def _train(config, observers=()):
    recipe = FineTune(config, observers=observers)
    recipe.setup()
    return recipe, recipe.train()


def _records(out):
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def _state(out):
    return json.loads((out / RUN_STATE_FILE).read_text())


def _adapter(folder):
    return load_file(folder / "adapter_model.safetensors")


def _same_adapter(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """An uninterrupted 6-step run, for the interrupted ones to match."""
    data_dir = tmp_path_factory.mktemp("reference-data")
    for name in ("dataset_train.jsonl", "dataset_validation.jsonl"):
        (data_dir / name).write_bytes((Path(__file__).parent / "fixtures" / name).read_bytes())
    out = tmp_path_factory.mktemp("reference") / "run"
    recipe, result = _train(_config(tiny_model_dir, data_dir, out))
    return recipe, result, out


def test_metrics_jsonl_run_json_and_heartbeat_of_a_finished_run(reference):
    recipe, result, out = reference
    records = _records(out)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in train] == [m["loss"] for m in recipe.history["train"]]
    assert [r["grad_norm"] for r in train] == [m["grad_norm"] for m in recipe.history["train"]]
    assert [(r["step"], r["loss"]) for r in evals] == [(m["step"], m["loss"]) for m in recipe.history["eval"]]
    assert [r["step"] for r in evals] == [0, 3, 6]  # the baseline, then every eval_steps
    for r in train:
        assert set(r) == {"kind", "step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "seconds_per_step",
                          "elapsed", "eta_s", "coverage", "entropy", "time"}
        assert r["tokens_per_s"] > 0 and r["seconds_per_step"] > 0 and r["eta_s"] >= 0
    assert train[-1]["eta_s"] == 0 and train[-1]["elapsed"] > train[0]["elapsed"]
    assert evals[1]["perplexity"] == pytest.approx(recipe.history["eval"][1]["perplexity"])

    state = _state(out)
    assert state["status"] == "finished" and state["stop_reason"] is None and state["error"] is None
    assert (state["step"], state["total_steps"]) == (6, 6)
    assert state["best"] == recipe.best and state["last_eval_loss"] == recipe.history["eval"][-1]["loss"]
    assert state["quantization"] == "none" and state["precision"] in ("bf16", "fp32")
    assert state["pid"] == os.getpid() and state["ended"] >= state["started"]
    assert state["tokens_per_s"] == pytest.approx(result["tokens_per_s"])
    heartbeat = json.loads((out / HEARTBEAT_FILE).read_text())
    assert heartbeat["pid"] == os.getpid() and state["started"] <= heartbeat["updated"] <= state["ended"]


def test_the_heartbeat_is_rewritten_until_closed(tmp_path):
    beat = Heartbeat(tmp_path, interval=0.05)
    first = json.loads((tmp_path / HEARTBEAT_FILE).read_text())["updated"]
    time.sleep(0.3)
    second = json.loads((tmp_path / HEARTBEAT_FILE).read_text())["updated"]
    beat.close()
    assert second > first and not beat._thread.is_alive()
    closed = (tmp_path / HEARTBEAT_FILE).read_text()
    time.sleep(0.15)
    assert (tmp_path / HEARTBEAT_FILE).read_text() == closed


def test_a_diverged_loss_is_written_as_null_so_every_line_stays_json(tmp_path):
    log = MetricsLog(tmp_path, resumed_step=0)
    log.append({"kind": "train", "step": 1, "loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-4})
    log.close()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    line = json.loads((tmp_path / METRICS_FILE).read_text(), parse_constant=refuse)
    assert line == {"kind": "train", "step": 1, "loss": None, "grad_norm": None, "lr": 1e-4}


def test_a_stop_file_stops_with_a_checkpoint_and_the_rerun_ends_like_an_uninterrupted_run(
        reference, tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_model_dir, data_dir, out, save_steps=5)  # no checkpoint due at the stop: it writes one

    def write_stop_file(record):  # as the studio page does, while step 2 trains
        if record["kind"] == "train" and record["step"] == 1:
            (out / STOP_FILE).write_text("")

    _, result = _train(config, observers=[write_stop_file])
    assert result["stop_reason"] == "stop-file" and result["steps"] == 1  # checked between steps
    state = _state(out)
    assert (state["status"], state["stop_reason"], state["step"]) == ("stopped", "stop-file", 1)
    assert (out / "checkpoint-1" / "trainer_state.json").exists() and not (out / "final").exists()
    assert not (out / STOP_FILE).exists()

    _, result = _train(config)
    assert result["stop_reason"] is None and result["steps"] == 6 and _state(out)["status"] == "finished"
    _same_adapter(_adapter(out / "final"), _adapter(reference[2] / "final"))
    train = [r for r in _records(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in train] == pytest.approx(
        [r["loss"] for r in _records(reference[2]) if r["kind"] == "train"], abs=1e-6)


def test_an_exception_marks_the_run_failed_and_the_rerun_drops_the_lines_past_its_checkpoint(
        tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"

    def crash(record):
        if record["step"] == 3 and record["kind"] == "train":
            raise ValueError("disk on fire\nsecond line")

    with pytest.raises(ValueError, match="disk on fire"):
        _train(_config(tiny_model_dir, data_dir, out), observers=[crash])
    state = _state(out)
    assert (state["status"], state["error"], state["step"]) == ("failed", "ValueError: disk on fire", 2)
    assert [r["step"] for r in _records(out)] == [0, 1, 2, 3]

    recipe, _ = _train(_config(tiny_model_dir, data_dir, out))
    records = _records(out)
    assert [(r["kind"], r["step"]) for r in records] == [("eval", 0), ("train", 1), ("train", 2), ("train", 3),
                                                         ("eval", 3), ("train", 4), ("train", 5), ("train", 6),
                                                         ("eval", 6)]
    assert [r["loss"] for r in records if r["kind"] == "train"] == [m["loss"] for m in recipe.history["train"]]
    assert _state(out)["status"] == "finished" and _state(out)["error"] is None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()  # the crashed session's step 3 is hidden (purge_step), the rerun's shown once
    train = [r for r in records if r["kind"] == "train"]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in train]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in train], rel=1e-6)


def test_an_observer_stop_reason_ends_the_run_after_that_step(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    seen = []

    def prune_on_first_eval_after_training(record):
        seen.append(record)
        return "pruned at step 3" if record["kind"] == "eval" and record["step"] > 0 else None

    recipe, result = _train(_config(tiny_model_dir, data_dir, out), observers=[prune_on_first_eval_after_training])
    assert result["stop_reason"] == "pruned at step 3" and result["steps"] == 3
    assert seen == _records(out)  # every record, the same dicts
    assert _state(out)["stop_reason"] == "pruned at step 3" and _state(out)["status"] == "stopped"


def test_max_train_tokens_cuts_the_plan_and_its_schedule_at_the_step_that_reaches_it(
        tiny_model_dir, data_dir, tmp_path):
    config = _config(tiny_model_dir, data_dir, tmp_path / "plan", max_steps=0, num_train_epochs=2)
    full = FineTune(config)
    full.setup()
    per_step = [int(sum(full.train_data.lengths[row].sum() for row in full.epoch_rows[e][a:b]))
                for e, a, b in full.schedule]
    budget = sum(per_step[:5]) - 1  # reached during step 5
    assert full.total_steps > 5

    recipe, result = _train(_config(tiny_model_dir, data_dir, tmp_path / "run", max_steps=0, num_train_epochs=100,
                                    max_train_tokens=budget))
    assert recipe.total_steps == 5 and result["steps"] == 5
    assert recipe.schedule == full.schedule[:5]
    tokens = [m["real_tokens"] for m in recipe.history["train"]]
    assert sum(tokens[:4]) < budget <= sum(tokens)
    assert recipe.scheduler.get_last_lr()[0] == 0.0  # the linear schedule ends at the cut


def test_sigterm_stops_train_script_and_the_rerun_matches_an_uninterrupted_run(tiny_model_dir, data_dir, tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "RHIZOME_NO_PROGRESS": "1"}

    def command(out):
        return [sys.executable, str(root / "train_script.py"), "--model", str(tiny_model_dir),
                "--train-file", str(data_dir / "dataset_train.jsonl"),
                "--validation-file", str(data_dir / "dataset_validation.jsonl"), "--output-dir", str(out),
                "--cache-dir", str(data_dir / "tokenized_cache"), "--max-seq-length", "256", "--batch-size", "2",
                "--grad-accum", "2", "--max-steps", "12", "--lr", "2e-3", "--warmup-steps", "2", "--lora-dropout",
                "0.1", "--save-steps", "5", "--eval-steps", "4", "--no-plots", "--threads", "1"]

    reference = subprocess.Popen(command(tmp_path / "reference"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    out = tmp_path / "stopped"
    process = subprocess.Popen(command(out), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / METRICS_FILE).exists() and '"kind": "train", "step": 2,' in (out / METRICS_FILE).read_text():
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    state = _state(out)
    assert (state["status"], state["stop_reason"]) == ("stopped", "signal") and 2 <= state["step"] < 12
    assert f"Stopped at step {state['step']} of 12" in stdout
    assert (out / f"checkpoint-{state['step']}" / "trainer_state.json").exists() and not (out / "final").exists()

    rerun = subprocess.run(command(out), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0 and "resuming from" in rerun.stderr, rerun.stderr[-3000:]
    assert reference.wait(timeout=240) == 0, reference.stderr.read()[-3000:]
    assert _state(out)["status"] == "finished"
    _same_adapter(_adapter(out / "final"), _adapter(tmp_path / "reference" / "final"))
    steps = [r["step"] for r in _records(out) if r["kind"] == "train"]
    assert steps == list(range(1, 13))


def test_tensorboard_event_files_hold_the_losses_of_metrics_jsonl(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, out = reference
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    records = _records(out)
    for kind in ("train", "eval"):
        expected = [(r["step"], r["loss"]) for r in records if r["kind"] == kind]
        got = [(e.step, e.value) for e in events.Scalars(f"{kind}/loss")]
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)  # stored as float32
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s", "train/coverage", "eval/perplexity"} <= set(
        events.Tags()["scalars"])


def test_trackio_and_mlflow_get_the_same_scalars_in_their_local_stores(tiny_model_dir, data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKIO_"))}
    env.update(PYTHONPATH=str(root), HF_HUB_OFFLINE="1", RHIZOME_NO_PROGRESS="1", TRACKIO_DIR=str(tmp_path / "trackio"))
    out = tmp_path / "tracked"
    done = subprocess.run(
        [sys.executable, str(root / "train_script.py"), "--model", str(tiny_model_dir),
         "--train-file", str(data_dir / "dataset_train.jsonl"), "--validation-file",
         str(data_dir / "dataset_validation.jsonl"), "--output-dir", str(out), "--cache-dir",
         str(data_dir / "tokenized_cache"), "--max-seq-length", "256", "--batch-size", "2", "--grad-accum", "2",
         "--max-steps", "4", "--eval-steps", "2", "--no-plots", "--threads", "1", "--report-to", "trackio", "mlflow"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = _records(out)
    train_losses = [round(r["loss"], 5) for r in records if r["kind"] == "train"]
    assert not (out / "tensorboard").exists()

    read = subprocess.run([sys.executable, "-c", "import json; from trackio.sqlite_storage import SQLiteStorage; "
                           "print(json.dumps(SQLiteStorage.get_logs('tracked', 'tracked'), default=str))"],
                          env=env, capture_output=True, text=True, timeout=120)
    logs = json.loads(read.stdout.strip().splitlines()[-1])
    assert [round(row["train/loss"], 5) for row in logs if "train/loss" in row] == train_losses
    assert [row["step"] for row in logs if "eval/loss" in row] == [0, 2, 4]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rhizome").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    assert [(m.step, round(m.value, 5)) for m in history] == list(zip([1, 2, 3, 4], train_losses))
    assert run.data.params["learning_rate"] == str(TrainConfig().learning_rate)


def test_a_tracker_whose_package_is_missing_is_named_with_its_pip_command(tiny_model_dir, data_dir, tmp_path,
                                                                          monkeypatch):
    from rhizome.errors import UserError
    from rhizome.train import report

    monkeypatch.setitem(report._PACKAGES, "mlflow", "mlflow_that_is_not_installed")
    with pytest.raises(UserError, match="pip install mlflow_that_is_not_installed"):
        FineTune(_config(tiny_model_dir, data_dir, tmp_path / "run", report_to=["tensorboard", "mlflow"])).setup()
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


def test_a_second_ctrl_c_aborts_at_once_and_the_run_says_so(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)

    def press_ctrl_c_twice(record):
        if record["kind"] == "train" and record["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the first: stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # the second: KeyboardInterrupt now

    with pytest.raises(KeyboardInterrupt):
        _train(_config(tiny_model_dir, data_dir, out, save_steps=5), observers=[press_ctrl_c_twice])
    state = _state(out)
    assert state["status"] == "failed" and state["error"].startswith("KeyboardInterrupt: aborted by a second Ctrl+C")
    assert not list(out.glob("checkpoint-*"))  # aborted, not stopped: no checkpoint was written
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handlers are gone with it


def test_a_stop_file_under_torchrun_stops_every_process_at_the_same_step(tiny_model_dir, data_dir, tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "RHIZOME_NO_PROGRESS": "1",
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(root / "train_script.py"), "--model", str(tiny_model_dir), "--train-file",
         str(data_dir / "dataset_train.jsonl"), "--validation-file", str(data_dir / "dataset_validation.jsonl"),
         "--output-dir", str(out), "--cache-dir", str(data_dir / "tokenized_cache"), "--max-seq-length", "256",
         "--batch-size", "2", "--grad-accum", "1", "--max-steps", "40", "--save-steps", "100", "--no-plots",
         "--threads", "1", "--precision", "fp32", "--report-to", "none"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / METRICS_FILE).exists() and '"kind": "train"' in (out / METRICS_FILE).read_text():
            (out / STOP_FILE).write_text("")
            break
        time.sleep(0.01)
    stdout, stderr = process.communicate(timeout=240)  # rank 1 would wait forever in a collective of a step alone
    assert process.returncode == 0, stderr[-3000:]
    state = _state(out)
    assert (state["status"], state["stop_reason"]) == ("stopped", "stop-file") and state["step"] < 40
    assert (out / f"checkpoint-{state['step']}" / "trainer_state.json").exists() and not (out / STOP_FILE).exists()
