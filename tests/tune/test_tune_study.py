"""Studies of real tiny-model trials: pruning stops a run early, best_config.json trains the best trial again
through train_script.py, a study killed with SIGKILL continues, Ctrl+C queues the trial again, two processes
share one study."""

import json
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

import train_script
from rhizome.tune.config import parse_tune_args
from rhizome.tune.objective import Objective, trial_dir
from rhizome.tune.report import BEST_CONFIG_FILE, write_report
from rhizome.tune.study import StudySettingsError, open_study, prepare, run_study
from tests.tune.conftest import run_state, run_tune


def _load(tune_dir):
    return optuna.load_study(study_name="rhizome", storage=f"sqlite:///{tune_dir / 'study.db'}")


@pytest.fixture
def pruned_study(tune_args, tmp_path):
    """Defaults (lr 3e-3), a second good trial, then a learning rate too small to learn anything: pruned."""
    tune, train = parse_tune_args(tune_args(tmp_path / "study", "--trials", "3", "--pruner", "median"), "test")
    tune, space = prepare(tune, train)
    study = open_study(tune, train, space)
    study.enqueue_trial({"learning_rate": 2e-3, "lora_r": 8, "use_sequence_packing": True})
    study.enqueue_trial({"learning_rate": 1e-7, "use_sequence_packing": True})
    run_study(study, Objective(tune, train, space), tune)
    return study, tune


def test_a_pruned_trial_stops_early_with_its_reason_and_fewer_tokens(pruned_study):
    study, tune = pruned_study
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[0].user_attrs["role"] == "defaults"
    full, pruned = study.trials[0], study.trials[2]
    state = run_state(trial_dir(tune.dir, 2))
    assert (state["status"], state["stop_reason"]) == ("stopped", "pruned")
    assert pruned.user_attrs["steps"] < pruned.user_attrs["total_steps"] == state["total_steps"]
    assert pruned.user_attrs["train_tokens"] < 0.8 * full.user_attrs["train_tokens"]
    assert full.user_attrs["train_tokens"] >= tune.trial_tokens  # the plan ends once the budget is reached
    assert not (trial_dir(tune.dir, 2) / "final").exists() and (trial_dir(tune.dir, 0) / "final").exists()
    assert run_state(trial_dir(tune.dir, 0))["status"] == "finished"


def test_best_config_trains_the_best_trial_again_through_train_script(pruned_study, tmp_path):
    study, tune = pruned_study
    summary = write_report(study, tune)
    best = study.best_trial
    assert summary["best"]["trial"] == best.number and summary["pruned"] == 1 and summary["tokens_saved"] > 0
    path = tune.dir / BEST_CONFIG_FILE
    saved = json.loads(path.read_text())
    assert saved["learning_rate"] == best.params["learning_rate"] and "output_dir" not in saved
    assert (tune.dir / "tuning_report.md").read_text().count("| complete |") == 2
    out = tmp_path / "retrained"
    assert train_script.main(["--config", str(path), "-o", str(out)]) == 0
    retrained = json.loads((out / "training_config.json").read_text())
    assert {k: retrained[k] for k in saved} == saved
    assert run_state(out)["best"]["loss"] == pytest.approx(best.value, abs=1e-5)


def _wait_for_training(run_dir, process, timeout=180):
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} did not start training")


def test_a_study_killed_mid_trial_continues_to_the_requested_trials(tune_args, tmp_path):
    tune_dir = tmp_path / "study"
    args = tune_args(tune_dir, "--trials", "3", "--pruner", "none")
    first = run_tune(args)
    _wait_for_training(tune_dir / "trial-0001", first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert run_state(tune_dir / "trial-0001")["status"] == "running"  # it had no chance to say otherwise
    second = run_tune(args)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    trials = _load(tune_dir).trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3
    killed = trials[1]
    assert killed.state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params and retried[0].state == TrialState.COMPLETE
    assert "Best: trial" in output


def test_two_processes_on_one_study_never_run_the_same_trial(tune_args, tmp_path):
    tune_dir = tmp_path / "study"
    args = tune_args(tune_dir, "--trials", "6", "--pruner", "none")
    processes = [run_tune(args), run_tune(args)]
    for process in processes:
        output, _ = process.communicate(timeout=400)
        assert process.returncode == 0, output
    trials = _load(tune_dir).trials
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) >= 6 and len(trials) == len(finished)
    assert sum(t.user_attrs.get("role") == "defaults" for t in trials) == 1
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in processes}  # both took trials
    for trial in trials:
        run_dir = trial_dir(tune_dir, trial.number)
        assert run_state(run_dir)["pid"] == trial.user_attrs["pid"]
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"kind": "train"' in line]
        assert steps == list(range(1, len(steps) + 1))  # one writer: no step trained twice
    assert sorted(p.name for p in tune_dir.glob("trial-*")) == [f"trial-{t.number:04d}" for t in trials]


def test_ctrl_c_stops_the_trial_after_its_step_and_queues_it_again(tune_args, tmp_path):
    tune_dir = tmp_path / "study"
    process = run_tune(tune_args(tune_dir, "--trials", "3", "--pruner", "none"))
    _wait_for_training(tune_dir / "trial-0001", process)
    os.kill(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    state = run_state(tune_dir / "trial-0001")
    assert (state["status"], state["stop_reason"]) == ("stopped", "signal")  # checkpointed, not killed
    trials = _load(tune_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[2].system_attrs["fixed_params"] == trials[1].params  # the next run starts with it


def test_a_study_refuses_to_continue_with_another_budget_but_may_grow(tune_args, tmp_path):
    def open_with(*extra):
        tune, train = parse_tune_args(tune_args(tmp_path / "study", *extra), "test")
        tune, space = prepare(tune, train)
        return open_study(tune, train, space)

    first = open_with("--trials", "3")
    assert len(first.trials) == 1 and first.trials[0].user_attrs["role"] == "defaults"
    assert len(open_with("--trials", "10").trials) == 1  # more trials: the same study, defaults queued once
    # The budget also sets the warm-up range, so the space differs too.
    with pytest.raises(StudySettingsError, match=r"made with other settings \(search space, trial_tokens\)"):
        open_with("--trial-tokens", "9999")
