"""Stage 5: compare the base model and LoRA adapters on the test split (see ``compare.run``).

    from rhizome.evaluate import EvalConfig, run
    report = run(EvalConfig(adapters=["SmolLM2-135M-Instruct-finetuned"]))
    report["models"]["base"]["rare"]["perplexity"]
"""

from rhizome.evaluate.adapters import EvalInputError
from rhizome.evaluate.compare import run
from rhizome.evaluate.config import EvalConfig

__all__ = ["EvalConfig", "EvalInputError", "run"]
