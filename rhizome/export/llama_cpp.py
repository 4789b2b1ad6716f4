"""Run a GGUF with the real llama.cpp, to check an export and to benchmark the chat against it.

llama.cpp comes from npm's ``node-llama-cpp``, whose per-platform packages ship prebuilt ``libllama`` /
``libggml`` (PyPI's ``llama-cpp-python`` is a source package that compiles llama.cpp for minutes). It is a tool
for tests and ``bench/chat.py``, never a dependency of the pipeline: :func:`install` puts it in a cache folder
(``$RHIZOME_NODE_LLAMA_CPP_DIR`` or ``~/.cache/rhizome/node-llama-cpp-<version>``) once, and raises
:class:`LlamaCppUnavailable` saying why when Node.js or npm is missing or the install fails.

    with LlamaCpp("model.gguf", threads=2) as llm:
        llm.chat(system="Be brief.", user="Hello", max_tokens=32)   # {"tokens", "text", "stop_reason", "prompt"}
        llm.evaluate([1, 2, 3], max_tokens=64)                      # greedy, timed
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from rhizome import atomic

VERSION = "3.21.1"  # later releases fail to resolve on some npm mirrors; this one's prebuilt binaries work
RUNNER = Path(__file__).with_name("llama_cpp_runner.mjs")
# node's process.platform-process.arch -> node-llama-cpp's package of prebuilt CPU binaries
PREBUILT = {"darwin-arm64": "mac-arm64-metal", "darwin-x64": "mac-x64", "win32-x64": "win-x64",
            "win32-arm64": "win-arm64"}


class LlamaCppUnavailable(RuntimeError):
    """Node.js / npm missing, or node-llama-cpp could not be installed or started."""


def install_dir() -> Path:
    default = Path.home() / ".cache" / "rhizome" / f"node-llama-cpp-{VERSION}"
    return Path(os.environ.get("RHIZOME_NODE_LLAMA_CPP_DIR") or default)


def _run(command: list[str], cwd: Path, what: str) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LlamaCppUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise LlamaCppUnavailable(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-800:]}")
    return done.stdout.strip()


def install(folder: Path | None = None) -> Path:
    """The folder holding node-llama-cpp (installed there from npm first if missing)."""
    folder = Path(folder or install_dir())
    if (folder / "node_modules" / "node-llama-cpp" / "package.json").is_file():
        return folder
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise LlamaCppUnavailable("Node.js and npm are needed to run llama.cpp from npm's node-llama-cpp "
                                  "(apt-get install nodejs npm, or https://nodejs.org)")
    platform = _run([node, "-p", "process.platform + '-' + process.arch"], Path.cwd(), "node")
    prebuilt = f"@node-llama-cpp/{PREBUILT.get(platform, platform)}@{VERSION}"

    def write(tmp: Path) -> None:
        atomic.write_json(tmp / "package.json", {"name": "rhizome-llama-cpp", "private": True, "type": "module"})
        # Optional dependencies would add every GPU build (CUDA, Vulkan: ~600 MB); the CPU one is named instead.
        # Install scripts stay off: they would try to build llama.cpp, and the prebuilt binaries need none.
        _run([npm, "install", "--save-exact", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund",
              f"node-llama-cpp@{VERSION}", prebuilt], tmp, f"npm install node-llama-cpp@{VERSION} {prebuilt}")

    atomic.write_dir(folder, write, keep_existing=True)
    return folder


class LlamaCpp:
    """A node process holding one GGUF in llama.cpp (CPU, 2048-token context), answering requests one at a time."""

    def __init__(self, gguf: str | os.PathLike, threads: int = 2):
        folder = install()
        runner = folder / RUNNER.name  # beside node_modules, where node resolves its import of node-llama-cpp
        if not runner.is_file() or runner.read_text(encoding="utf-8") != RUNNER.read_text(encoding="utf-8"):
            atomic.write_text(runner, RUNNER.read_text(encoding="utf-8"))
        self.process = subprocess.Popen([shutil.which("node") or "node", str(runner), str(Path(gguf).resolve()),
                                         str(threads)], cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        if not ready.strip():
            self.close()
            raise LlamaCppUnavailable(f"llama.cpp did not start on {gguf}: {self.process.stderr.read()[-800:]}")

    def _ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise LlamaCppUnavailable(f"llama.cpp exited: {self.process.stderr.read()[-800:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"llama.cpp: {answer['error']}")
        return answer

    def evaluate(self, tokens: list[int], max_tokens: int) -> dict:
        return self._ask(op="evaluate", tokens=list(tokens), max_tokens=max_tokens)

    def chat(self, system: str, user: str, max_tokens: int) -> dict:
        return self._ask(op="chat", system=system, user=user, max_tokens=max_tokens)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LlamaCpp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
