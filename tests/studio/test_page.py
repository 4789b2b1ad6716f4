"""The Train tab's handlers on run folders written by hand: what the page shows, what it refuses, what it runs."""

import json
import os
import socket
import time

import pytest

from rhizome import runs
from rhizome.errors import UserError
from rhizome.studio.form import form_fields
from rhizome.studio.page import StudioPage

SKIPPED = {"__type__": "update"}  # gr.skip(): the browser keeps what it shows


def write_run(root, name, status="running", metrics=(), command=None, error=None, **state):
    folder = root / name
    folder.mkdir()
    now = time.time()
    alive = {"pid": os.getpid(), "host": socket.gethostname(), "updated": now}
    (folder / runs.RUN_STATE_FILE).write_text(json.dumps({
        "format": 1, "status": status, "error": error, "base_model": str(root / "models" / "tiny"),
        "quantization": "none", "step": 3, "total_steps": 10, "best": {"step": 2, "loss": 2.5},
        "train_file": "data_finetune/dataset_train.jsonl", "command": command, **alive, **state}))
    (folder / runs.HEARTBEAT_FILE).write_text(json.dumps(alive))
    (folder / runs.METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / runs.LOG_FILE).write_text(f"step 3 loss 2.7 from {root}/data_finetune\n")
    return folder


TRAIN = [{"kind": "train", "step": s, "loss": 3.0 - s / 10, "lr": [1e-5, 2e-5, 3e-5][s - 1], "tokens_per_s": 100.0 + s,
          "coverage": s / 10, "eta_s": 60 - s} for s in (1, 2, 3)] + [{"kind": "eval", "step": 2, "loss": 2.5}]


@pytest.fixture
def page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working folder: what the page names paths relative to
    studio = StudioPage(tmp_path)
    yield studio
    studio.launcher.close()


def test_runs_list_shows_each_run_folder_without_the_machine_s_folders(page, tmp_path):
    write_run(tmp_path, "alpha", metrics=TRAIN)
    write_run(tmp_path, "beta", status="failed", error=f"OSError: cannot read {tmp_path}/data_finetune/x.jsonl")
    (tmp_path / "not-a-run").mkdir()
    rows = {row[0]: row for row in page.runs_table()}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"][1:6] == ["running", "models/tiny", "data_finetune/dataset_train.jsonl", "3 / 10", "2.5000"]
    assert rows["beta"][1] == "failed"
    assert page.default_run() in ("alpha", "beta") and set(page.names()) == {"alpha", "beta"}
    assert str(tmp_path) not in repr(rows)


def test_watch_shows_curves_log_and_a_failed_run_s_error(page, tmp_path):
    write_run(tmp_path, "beta", status="failed", metrics=TRAIN,
              error=f"OSError: cannot read {tmp_path}/data_finetune/x.jsonl")
    summary, loss, lr, speed, coverage, log = page.watch("beta")
    assert "status **failed**" in summary and "step 3 / 10" in summary and "best validation loss 2.5000" in summary
    assert "**Failed**: OSError: cannot read data_finetune/x.jsonl" in summary
    assert set(loss["series"]) == {"loss", "loss (smoothed)", "validation loss", "validation loss (smoothed)"}
    assert list(loss[loss.series == "loss"]["value"].dropna()) == [2.9, 2.8, 2.7]
    assert list(lr["value"].dropna()) == [1e-5, 2e-5, 3e-5] and list(speed.dropna()["step"]) == [1, 2, 3]
    assert list(coverage["value"].dropna()) == [0.1, 0.2, 0.3]
    assert log == "step 3 loss 2.7 from data_finetune" and str(tmp_path) not in summary + log


def test_a_tuning_study_s_trials_are_listed_and_watched_by_their_path(page, tmp_path):
    (tmp_path / "tuning").mkdir()
    write_run(tmp_path / "tuning", "trial-0001", status="stopped", metrics=TRAIN, stop_reason="pruned")
    rows = {row[0]: row for row in page.runs_table()}
    assert rows["tuning/trial-0001"][1] == "stopped"
    summary, loss, *_ = page.watch("tuning/trial-0001")
    assert "**tuning/trial-0001**" in summary and list(loss[loss.series == "loss"]["value"].dropna()) == [2.9, 2.8, 2.7]


@pytest.mark.parametrize("name", ["../outside", "/etc", "alpha/../..", "", None])
def test_names_that_are_not_run_folders_here_are_refused(page, tmp_path, name):
    write_run(tmp_path, "alpha")
    watch = [page.watch] if name else []  # no choice yet: Watch shows that nothing is chosen
    for handler in (*watch, page.stop, page.resume, page.evaluate, page.export):
        with pytest.raises(UserError):
            handler(name)
    with pytest.raises(UserError):
        page.compare(["alpha", name])


def test_stop_asks_a_running_run_to_stop_through_its_stop_file(page, tmp_path):
    folder = write_run(tmp_path, "alpha")
    assert "stop requested" in page.stop("alpha")
    assert (folder / runs.STOP_FILE).is_file()
    write_run(tmp_path, "done", status="finished")
    with pytest.raises(UserError, match="not running"):
        page.stop("done")


def test_resume_reruns_the_recorded_command_without_fresh(page, tmp_path):
    command = ["/somewhere/train_script.py", "--model", "models/tiny", "-o", "alpha", "--max-steps", "10", "--fresh",
               "--no-packing"]
    run = page.run(write_run(tmp_path, "alpha", status="stopped", command=command).name)
    argv = page.resume_command(run)
    assert argv[1].endswith("train_script.py") and os.path.isfile(argv[1])
    assert argv[2:] == ["--model", "models/tiny", "-o", "alpha", "--no-packing", "--max-steps", "10"]
    with pytest.raises(UserError, match="running"):
        page.resume(write_run(tmp_path, "busy").name)


def test_an_older_run_without_run_json_resumes_from_its_saved_settings(page, tmp_path):
    folder = tmp_path / "old-run"
    folder.mkdir()
    (folder / runs.CONFIG_FILE).write_text(json.dumps({"model": "models/tiny", "output_dir": "", "max_steps": 5,
                                                       "transformers_version": "5.0"}))
    assert page.resume_command(page.run("old-run"))[2:] == ["--model", "models/tiny", "-o", "old-run",
                                                          "--max-steps", "5"]
    command = ["train_script.py", "-o", "moved", "--validation-file", "../../secret.jsonl"]
    with pytest.raises(UserError, match="outside the working folder"):
        page.resume_command(page.run(write_run(tmp_path, "moved", status="stopped", command=command).name))


def test_start_refuses_paths_outside_the_working_folder_and_a_run_that_is_training(page, tmp_path):
    names = [f.name for f in form_fields()]
    values = page.defaults()
    values[names.index("output_dir")] = "../elsewhere"
    assert page.preview(*values).startswith("# cannot run: output_dir '../elsewhere' is outside")
    with pytest.raises(UserError, match="outside the working folder"):
        page.start(*values)
    write_run(tmp_path, "alpha")
    values[names.index("output_dir")] = "alpha"
    with pytest.raises(UserError, match="training now"):
        page.start(*values)
    assert page.launcher.jobs() == []


def test_a_tick_sends_only_what_changed(page, tmp_path):
    folder = write_run(tmp_path, "alpha", metrics=TRAIN[:2])
    first = page.refresh(None, None)
    assert first[1]["value"] == "alpha" and len(first[4].dropna()[first[4].dropna().series == "loss"]) == 2
    again = page.refresh("alpha", first[-1])
    assert all(part == SKIPPED for part in again[:-1])
    with open(folder / runs.METRICS_FILE, "a") as metrics:
        metrics.write(json.dumps(TRAIN[2]) + "\n")
    grown = page.refresh("alpha", again[-1])
    assert grown[0] == SKIPPED and len(grown[4].dropna()[grown[4].dropna().series == "loss"]) == 3


def test_a_reloaded_page_watches_the_run_training_now(page, tmp_path):
    write_run(tmp_path, "older", status="finished")
    write_run(tmp_path, "training")
    assert page.refresh("older", None)[1]["value"] == "training"  # the first tick after a (re)load
    assert page.refresh("older", ((), (), ()))[1]["value"] == "older"  # a choice made on the page stays


def test_every_plot_table_names_all_its_curves_even_before_the_first_point(page, tmp_path):
    write_run(tmp_path, "alpha")
    _, loss, lr, speed, coverage, _ = page.watch("alpha")
    assert set(loss["series"]) == {"loss", "loss (smoothed)", "validation loss", "validation loss (smoothed)"}
    assert [set(frame["series"]) for frame in (lr, speed, coverage)] == [{"learning rate"}, {"tokens/s"},
                                                                        {"theme coverage"}]
    frame, _ = page.compare(["alpha"])
    assert set(frame["series"]) == {"alpha: loss (smoothed)", "alpha: validation loss"}


def test_compare_puts_runs_on_one_plot_and_their_eval_reports_side_by_side(page, tmp_path):
    write_run(tmp_path, "alpha", status="finished", metrics=TRAIN)
    beta = write_run(tmp_path, "beta", status="finished", metrics=TRAIN[:2])
    report = {"models": {"base": {"overall": {"perplexity": 30.0, "token_accuracy": 0.25, "pairs": 4},
                                  "rare": {"perplexity": 40.0}, "common": {"perplexity": 20.0}},
                         "beta": {"overall": {"perplexity": 12.5, "token_accuracy": 0.4, "pairs": 4},
                                  "rare": {"perplexity": None}, "common": {"perplexity": 11.0}}}}
    (beta / runs.EVAL_REPORT_FILE).write_text(json.dumps(report))
    frame, rows = page.compare(["alpha", "beta"])
    assert {"alpha: loss (smoothed)", "alpha: validation loss", "beta: loss (smoothed)"} <= set(frame["series"])
    assert rows == [["alpha", "(not evaluated: press Evaluate)", "", "", "", "", ""],
                    ["beta", "base", "30.00", "40.00", "20.00", "25.0%", 4],
                    ["beta", "beta", "12.50", "", "11.00", "40.0%", 4]]
    with pytest.raises(UserError, match="no final adapter"):
        page.evaluate("alpha")
