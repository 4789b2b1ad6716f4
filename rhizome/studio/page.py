"""The studio page: start, watch, stop, resume, compare and use training runs of the working folder.

:class:`StudioPage` holds the handlers as plain methods (tests drive them without a browser); :func:`build_studio`
lays them out as the Train tab, beside a Chat tab. Everything shown is read from the run folders on disk
(:mod:`rhizome.runs`) at each tick of a ``gr.Timer``, so a reloaded page, a second browser or a page restarted
while a run trains shows the same thing; the browser only remembers which run it is watching. A run is named by
its folder's name and looked up among :func:`rhizome.runs.find_runs` of the working folder, so nothing the page
is sent can make it read or write elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import pandas as pd

from rhizome import runs
from rhizome.chat.app import hide_paths, shown_path
from rhizome.errors import UserError
from rhizome.studio import plots
from rhizome.studio.form import (TRAIN_SCRIPT, Field, check_paths, command_line, config_from_argv, config_from_values,
                                 form_fields, form_values, shown_command)
from rhizome.studio.launcher import Launcher
from rhizome.train.config import TrainConfig

PROJECT = TRAIN_SCRIPT.parent
RUN_COLUMNS = ["run", "status", "base model", "data", "steps", "best val loss", "tokens/s", "updated"]
EVAL_COLUMNS = ["run", "model", "perplexity", "rare themes", "common themes", "token accuracy", "test pairs"]
REFRESH_SECONDS = 2.0
LOG_LINES = 40
FORM_COLUMNS = 3
CHAT_TAB = "chat"
NOTHING_TO_WATCH = "_No run yet: start one below, or with python train_script.py in this folder._"


def _when(seconds: float | None) -> str:
    # A clock time, not "n s ago": a row that changes every tick would be sent to the browser at every tick.
    if seconds is None:
        return ""
    same_day = time.localtime(seconds)[:3] == time.localtime()[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(seconds))


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _model_name(name: str | None) -> str:
    # A base model is an id (shown as is) or a local folder (shown without the folders above it).
    if not name:
        return "?"
    return shown_path(name) if Path(name).expanduser().is_absolute() else name


class StudioPage:
    """Everything the Train tab does, independent of how it is laid out."""

    def __init__(self, root: str | Path = ".", chat=None, chat_page=None, launcher: Launcher | None = None):
        self.root = Path(root)
        self.chat = chat  # a StudioChat, or None when the page has no Chat tab
        self.chat_page = chat_page  # the Chat tab's ChatPage, whose status line names the adapter
        self.fields: list[Field] = form_fields()
        self.launcher = launcher or Launcher(self.root)

    # -- looking runs up -------------------------------------------------------------------------------------------

    def runs(self) -> list[runs.Run]:
        return runs.find_runs(self.root, nested=True)  # a tuning study's trials too

    def run(self, name: str | None) -> runs.Run:
        """The run folder called ``name`` here; a name that is not one of them is refused."""
        found = next((run for run in self.runs() if run.name == name), None)
        if found is None:
            raise UserError(f"no run named {name!r} in the working folder" if name else "choose a run first")
        return found

    def names(self) -> list[str]:
        """Runs on disk, newest first, then those only queued so far."""
        on_disk = [run.name for run in self.runs()]
        return on_disk + [job.run_name for job in self.launcher.jobs() if job.run_name not in on_disk]

    def _shown_status(self, name: str, run: runs.Run | None) -> str:
        job = self.launcher.job_for(name)
        if job is not None and job.state == "queued":
            return f"queued ({job.kind})"
        if job is not None and job.state == "running":
            if job.kind != "train":
                return f"{run.status if run else '?'} ({job.kind} running)"
            # Until the new process writes run.json, the folder still tells the previous attempt's end.
            if run is None or run.updated is None or run.updated < job.started:
                return "starting"
        return run.status if run else "?"

    # -- Runs ------------------------------------------------------------------------------------------------------

    def runs_table(self) -> list[list[Any]]:
        rows = []
        for run in self.runs():
            steps = f"{run.step} / {run.total_steps}" if run.total_steps else (str(run.step) if run.step else "")
            quantized = " (4-bit)" if run.quantization == "nf4" else ""
            rows.append([run.name, self._shown_status(run.name, run), _model_name(run.base_model) + quantized,
                         hide_paths(run.train_file or ""), steps, _loss(run.best_loss),
                         f"{run.tokens_per_s:,.0f}" if run.tokens_per_s else "", _when(run.updated)])
        on_disk = {row[0] for row in rows}
        rows += [[job.run_name, self._shown_status(job.run_name, None), "", "", "", "", "", ""]
                 for job in self.launcher.jobs() if job.run_name not in on_disk]
        return rows

    def default_run(self) -> str | None:
        """What a freshly opened page watches: the run training now, else the newest."""
        active = self.launcher.active
        if active is not None and active.kind == "train":
            return active.run_name
        found = self.runs()
        running = [run for run in found if run.status == "running"]
        return (running or found)[0].name if found else None

    # -- Start -----------------------------------------------------------------------------------------------------

    def defaults(self) -> list[Any]:
        return form_values(TrainConfig(), self.fields)

    def _config(self, values: Sequence[Any]) -> TrainConfig:
        config = config_from_values(values, self.fields)
        check_paths(config, self.root)
        return config

    def preview(self, *values: Any) -> str:
        """The exact command the Start button runs, or what is wrong with the form."""
        try:
            return shown_command(command_line(self._config(values)))
        except UserError as exc:
            return f"# cannot run: {exc}"

    def start(self, *values: Any) -> tuple[str, str]:
        """Queue a training run from the form; returns (message, the run's name to watch)."""
        config = self._config(values)
        name = (self.root / config.run_dir).resolve().name
        existing = next((run for run in self.runs() if run.name == name), None)
        if existing is not None and existing.status == "running":
            raise UserError(f"{name} is training now; stop it first, or choose another output folder")
        argv = command_line(config)
        self.launcher.submit("train", name, argv)
        where = "queued: it starts when the current job ends" if len(self.launcher.jobs()) > 1 else "starting"
        return f"{name}: {where}.\n\n`{shown_command(argv)}`", name

    # -- Stop / Resume ---------------------------------------------------------------------------------------------

    def stop(self, name: str) -> str:
        if self.launcher.cancel(name):
            return f"{name}: taken off the queue."
        job = self.launcher.job_for(name)
        run = self.run(name) if job is None else next((r for r in self.runs() if r.name == name), None)
        if run is not None and run.status == "running" and self._shown_status(name, run) == "running":
            runs.request_stop(run.path)
            return f"{name}: stop requested; it stops after its current step, with a checkpoint."
        # A job still starting (its STOP file would be taken for a leftover) or not a training: a signal.
        if self.launcher.terminate(name):
            return f"{name}: stopping the {job.kind}."
        raise UserError(f"{name} is not running (status {run.status if run else '?'})")

    def resume_command(self, run: runs.Run) -> list[str]:
        """The run's own command line again (as run.json recorded it), without --fresh, into the same folder."""
        try:
            recorded = json.loads((run.path / runs.RUN_STATE_FILE).read_text(encoding="utf-8")).get("command")
        except (OSError, ValueError, AttributeError):  # no run.json, or a damaged one: fall back to the settings
            recorded = None
        if isinstance(recorded, list) and recorded and all(isinstance(a, str) for a in recorded):
            config = config_from_argv(recorded[1:])
        else:  # a run from before run.json: its saved settings are the command
            known = {f.name for f in dataclasses.fields(TrainConfig)}
            config = TrainConfig(**{k: v for k, v in run.config.items() if k in known})
        config = dataclasses.replace(config, fresh=False)
        if (self.root / config.run_dir).resolve() != run.path.resolve():
            config = dataclasses.replace(config, output_dir=run.name)
        check_paths(config, self.root)
        return command_line(config)

    def resume(self, name: str) -> str:
        run = self.run(name)
        if run.status in ("running", "finished"):
            raise UserError(f"{name} is {run.status}; only a stopped, failed or dead run can be resumed")
        argv = self.resume_command(run)
        self.launcher.submit("train", name, argv)
        return f"{name}: resuming from its newest checkpoint.\n\n`{shown_command(argv)}`"

    # -- Watch -----------------------------------------------------------------------------------------------------

    def _signature(self, name: str | None) -> tuple:
        """Changes whenever what Watch shows would: the run's files, its status, its job's output."""
        if not name:
            return ()
        folder = self.root / name
        stats = []
        for file in (runs.RUN_STATE_FILE, runs.METRICS_FILE, runs.LOG_FILE, runs.EVAL_REPORT_FILE):
            try:
                info = (folder / file).stat()
                stats.append((info.st_mtime_ns, info.st_size))
            except OSError:
                stats.append(None)
        job = self.launcher.job_for(name)
        return (name, tuple(stats), job.state if job else None, len(job.output) if job else 0)

    def watch(self, name: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
        """(summary, loss curves, learning rate, tokens/s, theme coverage, last log lines) of a run."""
        empty = plots.loss_frame([])
        if not name:
            return NOTHING_TO_WATCH, empty, empty, empty, empty, ""
        job = self.launcher.job_for(name)
        try:
            run = self.run(name)
        except UserError:
            if job is None:
                raise
            return f"**{name}** · {self._shown_status(name, None)}", empty, empty, empty, empty, self._output(job)
        records = run.metrics()
        log_text = run.log_tail(LOG_LINES)
        if job is not None and (not log_text or job.returncode not in (None, 0)):
            log_text = "\n".join(filter(None, [log_text, self._output(job)]))
        return (self._summary(run, records), plots.loss_frame(records),
                plots.scalar_frame(records, "lr", "learning rate"),
                plots.scalar_frame(records, "tokens_per_s", "tokens/s"),
                plots.scalar_frame(records, "coverage", "theme coverage"), hide_paths(log_text))

    @staticmethod
    def _output(job) -> str:
        return f"[{job.kind}: {job.state}]\n" + "\n".join(list(job.output)[-LOG_LINES:])

    def _summary(self, run: runs.Run, records: Sequence[dict]) -> str:
        last = next((r for r in reversed(records) if r.get("kind") == "train"), {})
        status = self._shown_status(run.name, run)
        parts = [f"**{run.name}**", f"status **{status}**"]
        if run.total_steps:  # run.json is rewritten at checkpoints, metrics.jsonl at every logged step
            parts.append(f"step {max(run.step, last.get('step') or 0)} / {run.total_steps}")
        if status == "running" and last.get("eta_s") is not None:
            parts.append(f"ETA {_duration(last['eta_s'])}")
        if run.tokens_per_s or last.get("tokens_per_s"):
            parts.append(f"{run.tokens_per_s or last['tokens_per_s']:,.0f} tokens/s")
        if isinstance(last.get("coverage"), (int, float)):
            parts.append(f"theme coverage {last['coverage']:.0%}")
        if run.best_loss is not None:
            parts.append(f"best validation loss {run.best_loss:.4f} (step {run.best_step})")
        if run.last_eval_loss is not None:
            parts.append(f"last {run.last_eval_loss:.4f}")
        checkpoints = [folder.name for folder in run.checkpoints]
        details = [f"Base model {_model_name(run.base_model)} ({run.quantization} quantization)",
                   f"checkpoints: {', '.join(checkpoints) or 'none yet'}",
                   f"adapter: {'final/' if run.final else 'not yet'}"]
        lines = [" · ".join(parts), " · ".join(details)]
        if run.status == "failed" and run.error:
            lines.append(f"**Failed**: {hide_paths(run.error)}")
        if run.status == "stopped" and run.stop_reason:
            lines.append(f"Stopped ({run.stop_reason}); Resume continues from its newest checkpoint.")
        if run.status == "dead":
            lines.append("**Dead**: it says it is running, but its process is gone or silent; Resume continues it.")
        return "\n\n".join(lines)

    # -- Compare ---------------------------------------------------------------------------------------------------

    def compare(self, names: Sequence[str] | None) -> tuple[pd.DataFrame, list[list[Any]]]:
        """Several runs' loss curves on one plot, and their eval reports side by side."""
        chosen = [self.run(name) for name in names or ()]
        frame = plots.compare_frame({run.name: run.metrics() for run in chosen})
        rows = []
        for run in chosen:
            report = run.eval_report() or {}
            for model, scores in (report.get("models") or {}).items():
                rows.append([run.name, model, *(self._perplexity(scores, g) for g in ("overall", "rare", "common")),
                             self._accuracy(scores), (scores.get("overall") or {}).get("pairs", "")])
            if not report:
                rows.append([run.name, "(not evaluated: press Evaluate)", "", "", "", "", ""])
        return frame, rows

    @staticmethod
    def _perplexity(scores: dict, group: str) -> str:
        value = (scores.get(group) or {}).get("perplexity")
        return f"{value:.2f}" if isinstance(value, (int, float)) else ""

    @staticmethod
    def _accuracy(scores: dict) -> str:
        value = (scores.get("overall") or {}).get("token_accuracy")
        return f"{value:.1%}" if isinstance(value, (int, float)) else ""

    # -- Use -------------------------------------------------------------------------------------------------------

    def _finished(self, name: str) -> runs.Run:
        run = self.run(name)
        if run.final is None:
            raise UserError(f"{name} has no final adapter yet (status {run.status}); let it finish first")
        return run

    def evaluate(self, name: str) -> str:
        run = self._finished(name)
        argv = [sys.executable, str(PROJECT / "evaluate.py"), run.name]
        self.launcher.submit("evaluate", run.name, argv)
        return f"{run.name}: evaluation queued; its report appears in Compare when done.\n\n`{shown_command(argv)}`"

    def export(self, name: str) -> str:
        run = self._finished(name)
        argv = [sys.executable, str(PROJECT / "export_model.py"), run.name]
        self.launcher.submit("export", run.name, argv)
        return f"{run.name}: export queued (to {run.name}/merged).\n\n`{shown_command(argv)}`"

    def use_in_chat(self, name: str) -> str:
        """Switch the Chat tab to this run's adapter; returns what the chat now runs on."""
        if self.chat is None:
            raise UserError("this page has no Chat tab")
        run = self._finished(name)
        notes = [hide_paths(note) for note in self.chat.use_adapter(run.final, run.base_model)]
        if self.chat_page is not None:
            self.chat_page.status = notes
        return " · ".join(notes)

    # -- the timer -------------------------------------------------------------------------------------------------

    def refresh(self, name: str | None, shown: tuple | None) -> tuple:
        """One tick: (runs table, run choices, compare choices, the six Watch outputs, what is now shown).

        Parts that did not change since ``shown`` (what this browser tab was last sent; None on its first tick) are
        skipped, so a page left open costs a few file stats per tick."""
        rows, names = self.runs_table(), self.names()
        if shown is None or name not in names:  # a page just (re)loaded watches what trains now
            name = self.default_run()
        shown = shown or ((), (), ())
        signature = self._signature(name)
        now = (tuple(map(tuple, rows)), tuple(names), signature)
        out_rows = rows if now[0] != shown[0] else gr.skip()
        choices = gr.update(choices=names, value=name) if now[1] != shown[1] or name is None else gr.skip()
        compare = gr.update(choices=names) if now[1] != shown[1] else gr.skip()
        watched = self.watch(name) if now[2] != shown[2] else (gr.skip(),) * 6
        return (out_rows, choices, compare, *watched, now)


def _widget(field: Field, value: Any):
    label, info = field.flag, field.help
    key = f"form-{field.name}"
    if field.kind is bool:
        return gr.Checkbox(value, label=label, info=info, elem_id=key)
    if field.choices:
        return gr.Dropdown(list(field.choices), value=value, label=label, info=info, elem_id=key)
    if field.kind in (int, float) and not field.is_list:
        return gr.Number(value, label=label, info=info, precision=0 if field.kind is int else None, elem_id=key)
    return gr.Textbox(value, label=label, info=info, elem_id=key, lines=1, max_lines=1)


def _plot(frame: pd.DataFrame, label: str, elem_id: str) -> gr.LinePlot:
    return gr.LinePlot(frame, x="step", y="value", color="series", label=label, elem_id=elem_id, height=260,
                       x_title="step", y_title=label)


def _shown(method):
    """A handler for the page: its UserErrors as a message (gr.Error) without the machine's folders."""
    def handler(*args):
        try:
            return method(*args)
        except UserError as exc:
            raise gr.Error(hide_paths(str(exc))) from None
    return handler


def build_train_tab(page: StudioPage, tabs: gr.Tabs | None = None, chat_status: gr.Markdown | None = None,
                    refresh_seconds: float = REFRESH_SECONDS) -> None:
    """The Train tab's contents, in the Blocks being built (inside its ``gr.Tab``)."""
    private = {"api_visibility": "private"}
    gr.Markdown("### Runs")
    table = gr.Dataframe(page.runs_table(), headers=RUN_COLUMNS, interactive=False, elem_id="runs", wrap=True)
    with gr.Row():
        watched = gr.Dropdown(page.names(), value=page.default_run(), label="Watch run", elem_id="watched",
                              scale=3)
        stop = gr.Button("Stop", elem_id="run-stop", variant="stop", scale=1)
        resume = gr.Button("Resume", elem_id="run-resume", scale=1)
        evaluate = gr.Button("Evaluate", elem_id="run-evaluate", scale=1)
        export = gr.Button("Export", elem_id="run-export", scale=1)
        use = gr.Button("Chat with this adapter", elem_id="run-chat", scale=1, visible=page.chat is not None)
    message = gr.Markdown(elem_id="train-message")
    summary = gr.Markdown(NOTHING_TO_WATCH, elem_id="run-summary")
    with gr.Row():
        loss = _plot(plots.loss_frame([]), "loss", "plot-loss")
        lr = _plot(plots.scalar_frame([], "lr", "learning rate"), "learning rate", "plot-lr")
    with gr.Row():
        speed = _plot(plots.scalar_frame([], "tokens_per_s", "tokens/s"), "tokens/s", "plot-tokens")
        coverage = _plot(plots.scalar_frame([], "coverage", "theme coverage"), "theme coverage", "plot-coverage")
    log_box = gr.Textbox(label="Last lines of train.log", lines=10, max_lines=10, elem_id="train-log",
                         interactive=False, autoscroll=True)

    with gr.Accordion("Start a run (train_script.py's settings)", open=True, elem_id="start"):
        widgets = []
        for first in range(0, len(page.fields), FORM_COLUMNS):
            with gr.Row():
                for field, value in zip(page.fields[first:first + FORM_COLUMNS],
                                        page.defaults()[first:first + FORM_COLUMNS]):
                    widgets.append(_widget(field, value))
        command = gr.Code(page.preview(*page.defaults()), language="shell", label="Command that Start runs",
                          elem_id="train-command", interactive=False)
        start = gr.Button("Start", variant="primary", elem_id="run-start")

    with gr.Accordion("Compare runs", open=False, elem_id="compare"):
        compared = gr.Dropdown(page.names(), multiselect=True, label="Runs", elem_id="compared")

        # Drawn anew for each choice of runs: the plot takes its curves' colours from its first table.
        @gr.render(inputs=compared)
        def compare_runs(names):
            frame, rows = _shown(page.compare)(names)
            _plot(frame, "loss of the chosen runs", "plot-compare")
            gr.Dataframe(rows, headers=EVAL_COLUMNS, interactive=False, elem_id="eval-reports",
                         label="Eval reports (evaluate.py), side by side")

    shown = gr.State(None)
    watch_outputs = [summary, loss, lr, speed, coverage, log_box]
    timer = gr.Timer(refresh_seconds)
    # Outside the queue: a tick is a few file stats, not worth the queue's per-event bookkeeping.
    timer.tick(_shown(page.refresh), [watched, shown], [table, watched, compared, *watch_outputs, shown],
               show_progress="hidden", queue=False, **private)
    watched.input(_shown(page.watch), watched, watch_outputs, show_progress="hidden", **private)

    def on_row(event: gr.SelectData):
        return event.row_value[0]

    table.select(on_row, None, watched, **private).then(_shown(page.watch), watched, watch_outputs, **private)
    for widget in widgets:
        widget.change(page.preview, widgets, command, show_progress="hidden", queue=False, **private)
    def start_run(*values):
        said, name = _shown(page.start)(*values)
        return said, gr.update(choices=page.names(), value=name)

    start.click(start_run, widgets, [message, watched], **private).then(
        _shown(page.watch), watched, watch_outputs, show_progress="hidden", **private)
    stop.click(_shown(page.stop), watched, message, **private)
    resume.click(_shown(page.resume), watched, message, **private)
    evaluate.click(_shown(page.evaluate), watched, message, **private)
    export.click(_shown(page.export), watched, message, **private)
    if chat_status is not None and tabs is not None:
        def use_adapter(name):
            notes = _shown(page.use_in_chat)(name)
            return notes, notes, gr.Tabs(selected=CHAT_TAB)

        use.click(use_adapter, watched, [message, chat_status, tabs], **private)


def build_studio(page: StudioPage, chat_app: gr.Blocks | None = None, title: str = "RhizomeML studio",
                 refresh_seconds: float = REFRESH_SECONDS) -> gr.Blocks:
    """The page: the Train tab, and ``chat_app`` (the chat page's own Blocks) as the Chat tab."""
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}")
        chat_status = None
        if chat_app is not None:
            chat_status = gr.Markdown(" · ".join(page.chat.notes), elem_id="chat-adapter", render=False)
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id="train", elem_id="train-tab"):
                build_train_tab(page, tabs, chat_status, refresh_seconds)
            if chat_app is not None:
                with gr.Tab("Chat", id=CHAT_TAB, elem_id="chat-tab"):
                    chat_status.render()
                    chat_app.render()
    return app


IDLE_POLL_SECONDS = 0.05


def quiet_queue(app: gr.Blocks) -> None:
    """Make Gradio's queue poll at its Windows pace (every 50 ms, not every 1 ms) while it has nothing to do.

    On Linux its scheduler loop wakes 1,000 times a second when idle (and its progress loop 100 times), which alone
    cost a page that is only watching a run 2-3% of a core; 50 ms is imperceptible next to a 2 s tick."""
    queue = app._queue  # no public setting for it
    queue.sleep_when_free = IDLE_POLL_SECONDS
    queue.progress_update_sleep_when_free = 2 * IDLE_POLL_SECONDS
