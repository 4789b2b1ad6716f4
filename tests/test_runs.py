"""The run contract (rhizome.runs): what a run folder says about itself, and which adapter every stage picks."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from rhizome.errors import UserError
from rhizome.runs import (
    STALE_SECONDS, STOP_FILE, AdapterNotFoundError, Run, find_runs, is_run_dir, newest_adapter, request_stop,
    resolve_adapter, same_model,
)

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


def make_run(root, name, base=SMOL, final_mtime=None, state=None, config=True):
    run = root / name
    run.mkdir()
    if config:
        (run / "training_config.json").write_text(json.dumps({"model": base, "quantization": "auto"}))
    if state is not None:
        (run / "run.json").write_text(json.dumps({"format": 1, "base_model": base, **state}))
    if final_mtime is not None:
        final = run / "final"
        final.mkdir()
        (final / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": f"/cache/{base}"}))
        os.utime(final / "adapter_config.json", (final_mtime, final_mtime))
    return run


def running_state(pid, updated, host=None):
    return {"status": "running", "step": 3, "total_steps": 10, "pid": pid, "host": host or socket.gethostname(),
            "updated": updated, "started": updated - 5}


def test_newest_adapter_for_a_base_model(tmp_path):
    older_smol = make_run(tmp_path, "smol-a", SMOL, final_mtime=1_000)
    newer_smol = make_run(tmp_path, "smol-b", SMOL, final_mtime=2_000)
    newest_qwen = make_run(tmp_path, "qwen", QWEN, final_mtime=3_000)
    make_run(tmp_path, "smol-unfinished", SMOL)  # no final/: never chosen however new
    assert newest_adapter(tmp_path, SMOL)[0] == newer_smol / "final"
    assert newest_adapter(tmp_path, "/models/SmolLM2-135M-Instruct")[0] == newer_smol / "final"
    assert newest_adapter(tmp_path, QWEN)[0] == newest_qwen / "final"
    path, why = newest_adapter(tmp_path, "")
    assert path == newest_qwen / "final" and "the newest" in why
    os.utime(older_smol / "final" / "adapter_config.json", (4_000, 4_000))
    path, why = newest_adapter(tmp_path, SMOL)
    assert path == older_smol / "final" and f"trained on {SMOL}" in why and "2 other(s) ignored" in why


def test_newest_adapter_says_why_there_is_none(tmp_path):
    path, why = newest_adapter(tmp_path, SMOL)
    assert path is None and "train_script.py" in why
    make_run(tmp_path, "qwen", QWEN, final_mtime=1)
    path, why = newest_adapter(tmp_path, SMOL)
    assert path is None and f"No adapter trained on {SMOL}" in why and f"qwen (trained on {QWEN})" in why


def test_a_running_run_keeps_its_final_adapter_eligible(tmp_path):
    run = make_run(tmp_path, "again", SMOL, final_mtime=1, state=running_state(os.getpid(), time.time()))
    assert Run.load(run).status == "running" and newest_adapter(tmp_path, SMOL)[0] == run / "final"


def test_four_bit_comes_from_run_json_not_from_prose(tmp_path):
    qlora = make_run(tmp_path, "qlora", state={"status": "finished", "quantization": "nf4"}, final_mtime=1)
    plain = make_run(tmp_path, "plain", state={"status": "finished", "quantization": "none"}, final_mtime=1)
    (plain / "final" / "README.md").write_text("- Adapter: LoRA r=16; base weights 4-bit NF4 (QLoRA)\n")
    (plain / "train.log").write_text("Quantisation: 4-bit NF4\n")
    assert Run.load(qlora).quantization == "nf4"
    assert Run.load(plain).quantization == "none"


def test_runs_before_run_json_use_the_explicit_setting_only(tmp_path):
    auto = make_run(tmp_path, "auto", final_mtime=1)  # quantization "auto": resolved at run time, recorded nowhere
    (auto / "final" / "README.md").write_text("- Adapter: LoRA r=16; base weights 4-bit NF4 (QLoRA)\n")
    assert Run.load(auto).quantization == "unknown"
    explicit = make_run(tmp_path, "explicit", final_mtime=1)
    (explicit / "training_config.json").write_text(json.dumps({"model": SMOL, "quantization": "nf4"}))
    old = Run.load(explicit)
    assert old.quantization == "nf4" and old.status == "finished" and old.base_model == SMOL
    assert Run.load(make_run(tmp_path, "not-started")).status == "new"


def test_runs_before_run_json_report_progress_from_their_history(tmp_path):
    old = make_run(tmp_path, "demo", final_mtime=1)
    (old / "training_metrics.json").write_text(json.dumps({
        "train": [{"step": 1, "loss": 3.9, "tokens_per_s": 10.0}, {"step": 2, "loss": 3.5, "tokens_per_s": 12.5}],
        "eval": [{"step": 0, "loss": 3.8}, {"step": 2, "loss": 3.6}], "best": {"step": 2, "loss": 3.6}}))
    run = Run.load(old)
    assert (run.status, run.step, run.total_steps, run.best_step, run.best_loss) == ("finished", 2, 2, 2, 3.6)
    assert (run.last_eval_loss, run.tokens_per_s) == (3.6, 12.5)
    assert [(m["kind"], m["step"]) for m in run.metrics()] == [("eval", 0), ("train", 1), ("train", 2), ("eval", 2)]


def test_a_running_run_with_a_stale_heartbeat_is_dead(tmp_path):
    stale = time.time() - STALE_SECONDS - 30
    run = make_run(tmp_path, "killed", state=running_state(os.getpid(), stale))
    (run / "heartbeat.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                    "updated": stale}))
    assert Run.load(run).status == "dead"


def test_a_running_run_whose_process_is_gone_is_dead(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time()
    run = make_run(tmp_path, "crashed", state=running_state(gone.pid, now))
    (run / "heartbeat.json").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "updated": now}))
    assert Run.load(run).status == "dead"
    # On another machine the pid means nothing: only the heartbeat's age counts.
    (run / "heartbeat.json").write_text(json.dumps({"pid": gone.pid, "host": "elsewhere", "updated": now}))
    assert Run.load(run).status == "running"


def test_a_running_run_with_a_fresh_heartbeat_and_live_pid_is_running(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "alive", state={**running_state(os.getpid(), now - 40), "best": {"step": 2, "loss": 1.5},
                                             "last_eval_loss": 1.7, "tokens_per_s": 812.5,
                                             "train_file": "data_finetune/dataset_train.jsonl"})
    (run / "heartbeat.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "updated": now}))
    loaded = Run.load(run)
    assert loaded.status == "running" and loaded.updated == now and loaded.name == "alive"
    assert (loaded.step, loaded.total_steps, loaded.best_step, loaded.best_loss) == (3, 10, 2, 1.5)
    assert (loaded.last_eval_loss, loaded.tokens_per_s) == (1.7, 812.5)
    assert loaded.train_file == "data_finetune/dataset_train.jsonl" and loaded.base_model == SMOL


def test_metrics_ignore_a_partial_last_line(tmp_path):
    run = make_run(tmp_path, "r", state={"status": "running"})
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 2.5}\n'
                                       '{"kind": "eval", "step": 1, "loss": 2.4}\n'
                                       '{"kind": "train", "step": 2, "lo')
    assert [(m["kind"], m["step"]) for m in Run.load(run).metrics()] == [("train", 1), ("eval", 1)]
    assert Run.load(tmp_path / "missing").metrics() == []


def test_a_damaged_run_json_still_loads(tmp_path):
    run = make_run(tmp_path, "damaged", final_mtime=1)
    (run / "run.json").write_text('{"status": "runn')
    (run / "heartbeat.json").write_bytes(b"\x00\xff")
    loaded = Run.load(run)
    assert loaded.status == "finished" and loaded.base_model == SMOL and loaded.quantization == "unknown"
    (run / "run.json").write_text(json.dumps({"status": "failed", "step": "three", "best": [1], "updated": "now",
                                              "error": "RuntimeError: out of memory", "quantization": 4}))
    loaded = Run.load(run)
    assert (loaded.status, loaded.step, loaded.best_loss, loaded.error) == (
        "failed", 0, None, "RuntimeError: out of memory")
    (run / "training_config.json").write_text("[]")
    assert Run.load(run).config == {}


def test_log_tail_and_eval_report(tmp_path):
    run = make_run(tmp_path, "r")
    (run / "train.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    assert Run.load(run).log_tail(3) == "line 4997\nline 4998\nline 4999"
    assert Run.load(run).eval_report() is None
    (run / "eval_report.json").write_text(json.dumps({"models": {}}))
    assert Run.load(run).eval_report() == {"models": {}}


def test_find_runs_lists_run_folders_newest_first(tmp_path):
    now = time.time()
    make_run(tmp_path, "old", state={"status": "finished", "updated": now - 100})
    make_run(tmp_path, "new", state={"status": "stopped", "updated": now - 10})
    (tmp_path / "data_finetune").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert [(r.name, r.status) for r in find_runs(tmp_path)] == [("new", "stopped"), ("old", "finished")]
    assert not is_run_dir(tmp_path / "data_finetune") and not is_run_dir(tmp_path / "notes.txt")


def test_find_runs_nested_lists_a_studys_trials_by_their_path(tmp_path):
    now = time.time()
    make_run(tmp_path, "main", state={"status": "finished", "updated": now - 100})
    (tmp_path / "tuning").mkdir()
    make_run(tmp_path / "tuning", "trial-0001", state={"status": "stopped", "stop_reason": "pruned", "updated": now})
    (tmp_path / ".hidden").mkdir()
    make_run(tmp_path / ".hidden", "trial-0002", state={"status": "finished", "updated": now})
    assert [r.name for r in find_runs(tmp_path)] == ["main"]  # the adapter rule never picks a trial
    runs = find_runs(tmp_path, nested=True)
    assert [(r.name, r.stop_reason) for r in runs] == [("tuning/trial-0001", "pruned"), ("main", None)]
    assert runs[0].path == tmp_path / "tuning" / "trial-0001"


def test_request_stop_writes_the_stop_file(tmp_path):
    run = make_run(tmp_path, "r", state=running_state(os.getpid(), time.time()))
    request_stop(run)
    assert (run / STOP_FILE).is_file() and not list(run.glob(".*tmp*"))


def test_resolve_adapter_from_a_run_final_checkpoint_or_missing_path(tmp_path):
    run = make_run(tmp_path, "r", final_mtime=1)
    path, found = resolve_adapter(str(run))
    assert path == run / "final" and found.path == run
    path, found = resolve_adapter(str(run / "final"))
    assert path == run / "final" and found.name == "r"
    checkpoint = run / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "adapter_config.json").write_text("{}")
    assert resolve_adapter(str(checkpoint))[0] == checkpoint
    elsewhere = tmp_path / "downloaded"
    elsewhere.mkdir()
    (elsewhere / "adapter_config.json").write_text("{}")
    assert resolve_adapter(str(elsewhere)) == (elsewhere, None)
    with pytest.raises(AdapterNotFoundError, match="adapter not found.*train_script.py") as missing:
        resolve_adapter(str(tmp_path / "missing"))
    assert isinstance(missing.value, UserError)
    started = make_run(tmp_path, "started")
    with pytest.raises(AdapterNotFoundError, match="holds no LoRA adapter") as none_yet:
        resolve_adapter(str(started))
    assert "checkpoint" not in str(none_yet.value)
    for step in (9, 10):
        (started / f"checkpoint-{step}").mkdir()
        (started / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterNotFoundError, match="not finished: use its latest checkpoint, .*checkpoint-10,"):
        resolve_adapter(str(started))


def test_same_model_compares_ids_folders_and_gguf_files():
    assert same_model(SMOL, "/home/me/.cache/models/SmolLM2-135M-Instruct/")
    assert same_model("smollm2-135m-instruct.gguf", SMOL)
    assert not same_model(SMOL, QWEN)


@pytest.mark.slow
def test_a_real_training_run_reads_back_through_the_contract(tiny_model_dir, tmp_path):
    """The trainer's files (rhizome.train) and this reader agree: a finished run is found, chosen and described."""
    from pathlib import Path

    from rhizome.train.config import TrainConfig
    from rhizome.train.loop import FineTune

    fixtures = Path(__file__).parent / "train" / "fixtures"
    run_dir = tmp_path / "tiny-run"
    recipe = FineTune(TrainConfig(
        model=str(tiny_model_dir), train_file=str(fixtures / "dataset_train.jsonl"),
        validation_file=str(fixtures / "dataset_validation.jsonl"), output_dir=str(run_dir),
        cache_dir=str(tmp_path / "cache"), max_seq_length=128, per_device_train_batch_size=2, max_steps=2,
        save_steps=1, eval_steps=2, threads=1, plots=False))
    recipe.setup()
    recipe.train()
    run = Run.load(run_dir)
    assert (run.status, run.quantization, run.step, run.total_steps) == ("finished", "none", 2, 2)
    assert run.base_model == str(tiny_model_dir) and run.best_loss is not None and run.error is None
    assert [m["step"] for m in run.metrics() if m["kind"] == "train"] == [1, 2]
    assert run.final == run_dir / "final" and [p.name for p in run.checkpoints][-1] == "checkpoint-2"
    assert newest_adapter(tmp_path, str(tiny_model_dir))[0] == run_dir / "final"
    assert resolve_adapter(str(run_dir))[0] == run_dir / "final"
