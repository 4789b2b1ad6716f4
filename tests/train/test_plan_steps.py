"""One step planner for SFT and preference training (``rhizome.train.loop.plan_steps``): epochs, a fraction of
the last one, max_steps and the max_train_tokens cut, and both recipes take their schedule from it."""

import numpy as np

from rhizome.train.config import TrainConfig
from rhizome.train.loop import plan_steps

UNITS = [10, 20, 30, 40, 50]  # real tokens of an epoch's five units


def _plan(**settings):
    laid_out = []

    def lay_out_epoch(epoch):
        laid_out.append(epoch)
        return UNITS

    return plan_steps(TrainConfig(**settings), lay_out_epoch, 2), laid_out


def test_whole_and_fractional_epochs():
    schedule, laid_out = _plan(num_train_epochs=1.5)
    assert schedule == [(0, 0, 2), (0, 2, 4), (0, 4, 5), (1, 0, 2), (1, 2, 4)]  # 3 steps, then round(3 x 0.5)
    assert laid_out == [0, 1]


def test_max_steps_overrides_epochs_and_lays_out_only_the_epochs_it_reaches():
    schedule, laid_out = _plan(num_train_epochs=1.0, max_steps=4)
    assert schedule == [(0, 0, 2), (0, 2, 4), (0, 4, 5), (1, 0, 2)]
    assert laid_out == [0, 1]


def test_the_token_budget_ends_the_plan_at_the_step_that_reaches_it():
    schedule, _ = _plan(num_train_epochs=3.0, max_train_tokens=150 + 30)  # an epoch is 150 tokens
    assert schedule == [(0, 0, 2), (0, 2, 4), (0, 4, 5), (1, 0, 2)]  # 150 + 30 reached by the fourth step
    schedule, _ = _plan(num_train_epochs=3.0, max_train_tokens=151)
    assert schedule[-1] == (1, 0, 2)


def test_dpo_plans_its_micro_batches_with_the_same_planner(tiny_model_dir, tokenizer, tmp_path):
    import json
    from pathlib import Path

    from rhizome.train.dpo import PreferenceTune
    from rhizome.train.loop import Dist

    fixtures = Path(__file__).parent / "fixtures"
    rows = [json.loads(line) for line in (fixtures / "dataset_train.jsonl").read_text().splitlines()]
    path = tmp_path / "dataset_preferences_train.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "prompt": r["messages"][:-1], "chosen": r["messages"][-1:],
                                        "rejected": [rows[i - 1]["messages"][-1]]}) + "\n"
                            for i, r in enumerate(rows)))
    settings = dict(model=str(tiny_model_dir), train_file=str(path), validation_file="", max_seq_length=256,
                    per_device_train_batch_size=2, gradient_accumulation_steps=3, init_adapter="none",
                    use_cache=False, report_to=["none"], plots=False, threads=1, num_train_epochs=2.0)
    full = PreferenceTune(TrainConfig(method="dpo", output_dir=str(tmp_path / "full"), **settings), Dist())
    full.setup()
    tokens = [sum(int(full.train_data.lengths[row].sum()) for row in rows)
              for epoch, first, end in full.schedule for _, rows in full.epoch_batches[epoch][first:end]]
    steps = len(full.schedule)
    assert steps == 2 * int(np.ceil(len(full.epoch_batches[0]) / 3))
    budget = int(np.cumsum(tokens)[3 * 4 - 1])  # the tokens of the first four steps' micro-batches
    cut = PreferenceTune(TrainConfig(method="dpo", output_dir=str(tmp_path / "cut"), max_train_tokens=budget, **settings),
                  Dist())
    cut.setup()
    assert cut.schedule == full.schedule[:4] and cut.total_steps == 4
