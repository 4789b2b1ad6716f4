"""Training on several processes (torchrun / accelerate launch): ``--sharding none | ddp | fsdp``.

- ``ddp``: every process holds the whole model; ``DistributedDataParallel`` averages the LoRA gradients.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``): every decoder layer is one unit whose parameters,
  the frozen base (bf16 or fp32) and the fp32 LoRA factors alike, are split across the processes and gathered
  only while that layer runs; the embeddings, final norm and LM head form the root unit. Gradients are
  reduce-scattered and averaged as DDP's are, and AdamW keeps only its shard of each moment, so a model
  whose weights do not fit on one device trains across several. FSDP2 shards parameter by parameter, so the
  mixed dtypes of a layer (frozen bf16 base, trainable fp32 LoRA) need no flattening; it asks only that the
  trainable ones share a dtype.

Checkpoints keep one format whatever the sharding: under fsdp the LoRA weights and AdamW state are gathered
whole onto rank 0's CPU (``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict``,
frozen weights left out) and written as the single-process run writes them (``adapter_model.safetensors``
through PEFT, ``optimizer.pt`` as ``torch.optim``'s ``state_dict`` with parameters numbered in model order),
and every process loads the whole state back and keeps its shard. A resume is exact under the same number of
processes (the plan of rows per step depends on it).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from rhizome.errors import UserError

class ShardingError(UserError):
    """--sharding asks for something this launch cannot do."""


def resolve(setting: str, world: int) -> str:
    """``auto`` is ddp under a launcher with several processes (WORLD_SIZE > 1), none otherwise."""
    if setting == "auto":
        return "ddp" if world > 1 else "none"
    if setting != "none" and world == 1:
        raise ShardingError(f"--sharding {setting} needs several processes: launch with torchrun --nproc-per-node N "
                            "train_script.py (or accelerate launch), or pass --sharding none")
    if setting == "none" and world > 1:
        raise ShardingError(f"--sharding none with {world} processes would train {world} separate copies: "
                            "pass --sharding ddp or fsdp, or launch a single process")
    return setting


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's stack of layers (the first ModuleList of the decoder)."""
    from rhizome.train.model import decoder_and_head

    decoder, _ = decoder_and_head(model)
    return next(child for child in decoder.children() if isinstance(child, nn.ModuleList))


def wrap(loss_module: nn.Module, model: nn.Module, sharding: str, device: torch.device) -> nn.Module:
    """The module to call for the loss: ``loss_module`` itself, in DDP, or with ``model`` sharded in place."""
    if sharding == "ddp":
        return nn.parallel.DistributedDataParallel(loss_module,
                                                   device_ids=[device.index] if device.type == "cuda" else None)
    if sharding != "fsdp":
        return loss_module
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if device.type == "cuda":
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    # The root unit is the loss module, not the model: the fused loss reads the LM head's weight outside the
    # model's forward, which must find it gathered.
    return fully_shard(loss_module, mesh=mesh)


def grad_sync(module: nn.Module, sharding: str, sync: bool):
    """A context for one micro-batch's backward: gradients are reduced across processes only when ``sync``
    (the step's last micro-batch); before that each process accumulates its own."""
    if sync or sharding == "none":
        return contextlib.nullcontext()
    if sharding == "ddp":
        return module.no_sync()
    module.set_requires_gradient_sync(False)
    return _restore_sync(module)


@contextlib.contextmanager
def _restore_sync(module):
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, ignore_frozen_params=True, **kwargs)


def _trainable_names(model: nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]


def adapter_state(model: nn.Module, sharding: str) -> dict | None:
    """Under fsdp, the whole trainable (LoRA) state on rank 0's CPU, keyed as ``model.state_dict()`` (empty on
    the other ranks; every rank must call it); None otherwise: the model holds it whole."""
    if sharding != "fsdp":
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def save_adapter(model: nn.Module, folder, state: dict | None) -> None:
    """PEFT's adapter files in ``folder`` from ``state`` (see :func:`adapter_state`), or from the model."""
    model.save_pretrained(folder, **({"state_dict": state} if state is not None else {}))


def load_adapter(model: nn.Module, peft_state: dict[str, torch.Tensor], sharding: str) -> None:
    """Load an adapter file's tensors (PEFT's names) into the model; under fsdp each rank keeps its shard."""
    from peft import set_peft_model_state_dict

    if sharding != "fsdp":
        set_peft_model_state_dict(model, peft_state)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    # PEFT stores "...q_proj.lora_A.weight" for the model's "...q_proj.lora_A.<adapter>.weight".
    adapter = f".{model.active_adapter}."
    full = {name: peft_state[name.replace(adapter, ".")] for name in _trainable_names(model)}
    set_model_state_dict(model, full, options=_options())


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, sharding: str) -> dict:
    """The optimizer's ``state_dict()`` as one process holds it; under fsdp gathered whole onto rank 0 (every
    rank must call it) and renumbered as ``torch.optim`` numbers parameters, so the file is the same."""
    if sharding != "fsdp":
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not full:
        return {}
    index = {name: i for i, name in enumerate(_trainable_names(model))}
    return {"state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in full["param_groups"]]}


def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, sharding: str) -> None:
    if sharding != "fsdp":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _trainable_names(model)
    full = {"state": {names[i]: value for i, value in state["state"].items()},
            "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                             for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, full, options=_options())


def grad_norm(norm: torch.Tensor) -> float:
    """clip_grad_norm_'s total norm as a float: a DTensor under fsdp (each rank holds part of the gradients)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
