"""The Ollama ``Modelfile`` beside an exported GGUF: chat template, stop tokens, system prompt and defaults.

A GGUF that loops or babbles in Ollama almost always has a wrong template or a missing stop token, so nothing
is left to Ollama's guess. The model's Jinja chat template is recognised by what it renders, not by its source
text: sentinel conversations are rendered with it and compared with ChatML (``<|im_start|>role\\n...<|im_end|>\\n``,
SmolLM2, Qwen, many fine-tunes). A ChatML template becomes the equivalent Go template (Ollama's own form for
ChatML models); a system message the template adds when none is given (SmolLM2's "You are a helpful AI
assistant named SmolLM...") becomes ``SYSTEM``, since that is what the model saw in training. Any other template
is not guessed at: the Modelfile says so, and Ollama falls back to the template inside the GGUF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rhizome.chat.config import ChatConfig

CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"
_S, _U1, _A1, _U2 = "SYSTEM-0", "USER-1", "ASSISTANT-1", "USER-2"

# Ollama's Go template for ChatML: .Messages for /api/chat, .System / .Prompt / .Response for /api/generate.
CHATML_GO_TEMPLATE = """{{- if .Messages }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""


@dataclass
class Modelfile:
    gguf_name: str
    template: str | None          # Go template, None when the chat template is not one we translate
    system: str | None
    stops: list[str]
    parameters: dict = field(default_factory=dict)
    note: str = ""                # why there is no TEMPLATE, for the file and the summary

    def text(self) -> str:
        lines = [f"FROM ./{self.gguf_name}"]
        if self.template is not None:
            lines.append(f'TEMPLATE """{self.template}"""')
        else:
            lines.append(f"# No TEMPLATE: {self.note}")
        if self.system:
            lines.append(f'SYSTEM """{self.system}"""')
        lines += [f"PARAMETER stop {_quote(stop)}" for stop in self.stops]
        lines += [f"PARAMETER {name} {value}" for name, value in self.parameters.items()]
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chatml(system: str | None, turns: list[tuple[str, str]]) -> str:
    head = f"{CHATML_START}system\n{system}{CHATML_END}\n" if system is not None else ""
    body = "".join(f"{CHATML_START}{role}\n{text}{CHATML_END}\n" for role, text in turns)
    return f"{head}{body}{CHATML_START}assistant\n"


def chatml_default_system(tokenizer) -> tuple[bool, str | None]:
    """(whether the tokenizer's chat template renders ChatML, the system message it adds when none is given)."""
    if not tokenizer.chat_template:
        return False, None
    try:
        full = _render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U1},
                                   {"role": "assistant", "content": _A1}, {"role": "user", "content": _U2}])
        bare = _render(tokenizer, [{"role": "user", "content": _U1}])
    except Exception:  # noqa: BLE001 - a template that raises on plain conversations is simply not ChatML
        return False, None
    if full != chatml(_S, [("user", _U1), ("assistant", _A1), ("user", _U2)]):
        return False, None
    if bare == chatml(None, [("user", _U1)]):
        return True, None
    prefix, suffix = f"{CHATML_START}system\n", f"{CHATML_END}\n{CHATML_START}user\n{_U1}{CHATML_END}\n"
    if bare.startswith(prefix) and bare.endswith(suffix + f"{CHATML_START}assistant\n"):
        return True, bare[len(prefix):-len(suffix + f"{CHATML_START}assistant\n")]
    return False, None


def stop_tokens(tokenizer, generation_config) -> list[str]:
    """Every token that ends a reply: the generation config's eos ids, the tokenizer's eos, and for ChatML the turn
    markers (a model that opens a new turn has finished its own)."""
    ids = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids = ids if isinstance(ids, list) else [ids]
    stops = [tokenizer.convert_ids_to_tokens(int(i)) for i in ids if i is not None]
    stops.append(tokenizer.eos_token)
    vocab = tokenizer.get_vocab()
    stops += [marker for marker in (CHATML_END, CHATML_START) if marker in vocab]
    return list(dict.fromkeys(s for s in stops if s))


def build_modelfile(gguf_name: str, tokenizer, generation_config, context_length: int) -> Modelfile:
    is_chatml, system = chatml_default_system(tokenizer)
    chat = ChatConfig()  # the chat page's sampling defaults, so Ollama answers as the page does
    parameters = {"temperature": chat.temperature, "top_p": chat.top_p, "repeat_penalty": chat.repetition_penalty,
                  "num_predict": chat.max_new_tokens, "num_ctx": context_length}
    if is_chatml:
        return Modelfile(gguf_name, CHATML_GO_TEMPLATE, system, stop_tokens(tokenizer, generation_config), parameters)
    note = ("this model's chat template is not ChatML, which is the one translated to Ollama's Go template; Ollama "
            "will use the template inside the GGUF: check that replies stop, or write a TEMPLATE "
            "(https://github.com/ollama/ollama/blob/main/docs/template.md)") if tokenizer.chat_template else (
            "this model has no chat template: it is prompted with plain text")
    return Modelfile(gguf_name, None, None, stop_tokens(tokenizer, generation_config), parameters, note=note)
