#!/usr/bin/env python3
"""Stage 4 of RhizomeML: LoRA / QLoRA fine-tuning with theme-weighted sampling and sequence packing.

    python train_script.py                        # data_finetune/dataset_{train,validation}.jsonl, SmolLM2-135M
    python train_script.py                        # again: resumes from the newest complete checkpoint
    python train_script.py --fresh                # start over
    python train_script.py --model Qwen/Qwen2.5-0.5B-Instruct --quantization nf4 --lr 1e-4
    python train_script.py --method dpo           # then: preference training from the SFT adapter (or orpo; README)
    torchrun --nproc-per-node 2 train_script.py   # DistributedDataParallel, same flags

Ctrl+C, SIGTERM or a file named STOP in the output folder stops after the current step with a checkpoint;
the same command resumes. A second Ctrl+C aborts at once.
"""

import os
import sys

from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.log import setup_logging
from rhizome.runs import LOG_FILE
from rhizome.train.config import TrainConfig
from rhizome.train.loop import run


def main(argv=None) -> int:
    config, _ = parse_args(TrainConfig, __doc__, argv)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes train.log
    config.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(config.verbose, log_file=config.run_dir / LOG_FILE if main_process else None)
    if config.method in ("dpo", "orpo"):
        from rhizome.train.dpo import run as run_preferences  # imported here: it loads the formatter's modules (~1 s)

        recipe, result = run_preferences(config)
    else:
        recipe, result = run(config)
    if recipe.dist.main:
        print("\n".join(recipe.summary_lines))
        if result["stop_reason"]:
            print(f"Stopped at step {result['steps']} of {result['total_steps']} ({result['stop_reason']}); "
                  "rerun the same command to resume")
            return 0
        print(f"Trained {result['steps']} of {result['total_steps']} steps"
              + (f", {result['seconds_per_step']:.2f} s/step, {result['tokens_per_s']:.0f} real tokens/s"
                 if result["seconds_per_step"] else ""))
        if result["first_eval_loss"] is not None:
            print(f"Validation loss: {result['first_eval_loss']:.4f} before, {result['last_eval_loss']:.4f} after"
                  + (f", best {result['best']['loss']:.4f} at step {result['best']['step']}"
                     if result["best"]["loss"] is not None else ""))
        print(f"Adapter: {result['final_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
