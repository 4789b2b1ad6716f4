"""The layout of a training run folder: the one place that knows what the files in it are and mean.

``train_script.py`` writes, into its run folder (``<model>-finetuned/`` or ``--output-dir``)::

    training_config.json        the TrainConfig as trained (plus library versions)
    run.json                    the run's state, rewritten atomically at start, at each checkpoint, at the end:
                                  {"format": 1, "status": "running" | "finished" | "stopped" | "failed",
                                   "stop_reason": null | "signal" | "stop-file" | "<observer's reason>",
                                   "error": null | "<one line: type: message>",
                                   "base_model": config.model, "model_path": the local folder loaded,
                                   "quantization": "nf4" | "none", "precision": "bf16" | "fp32",
                                   "step": int, "total_steps": int, "best": {"step": int|null, "loss": float|null},
                                   "last_eval_loss": float|null, "tokens_per_s": float|null,
                                   "train_file": str, "validation_file": str,
                                   "pid": int, "host": str, "command": [argv...],
                                   "started": unix seconds, "updated": unix seconds, "ended": unix seconds|null}
    heartbeat.json              {"pid": int, "host": str, "updated": unix seconds}: rewritten every
                                HEARTBEAT_SECONDS by a thread of the training process while it lives
    metrics.jsonl               one JSON object per line, flushed per line:
                                  {"kind": "train", "step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s",
                                   "seconds_per_step", "elapsed", "eta_s", "coverage", "entropy", "time"}
                                  {"kind": "eval", "step", "epoch", "loss", "perplexity", "elapsed", "time"}
                                on resume, lines past the checkpoint's step are dropped (the rerun writes them again)
    STOP                        written by anyone (the studio page, a user): the trainer finishes its step,
                                checkpoints and exits 0 with status "stopped"; removed when honoured
    train.log                   the log
    checkpoint-<step>/          complete checkpoints (rhizome.train.checkpoint)
    best/, final/               adapters: best validation loss so far; the run's result
    eval_report.json/.md        evaluate.py's report on this run (its default output folder)

A run whose run.json says "running" but whose heartbeat is older than STALE_SECONDS (or whose pid is gone,
on the same host) is shown as "dead": it was killed without a chance to say so.
"""

from __future__ import annotations

RUN_STATE_FILE = "run.json"
HEARTBEAT_FILE = "heartbeat.json"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "STOP"
CONFIG_FILE = "training_config.json"
LOG_FILE = "train.log"
RUN_STATE_FORMAT = 1
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
STATUSES = ("running", "finished", "stopped", "failed", "dead")
