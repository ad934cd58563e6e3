"""Where a run reports to. `collect` and `train` know nothing of Celery, HTTP or the database: they call sinks.

A sink overrides what it needs; every method defaults to doing nothing. The worker adds an HTTP sink that posts
to the backend; the CLI uses the terminal and JSONL sinks; wandb joins when WANDB_PROJECT is set.

Event kinds used across the project:
    "status"   {"status": "running"|..., "message": str}
    "alert"    {"kind": "nan"|"inf"|"divergence"|"oom", "key": str, "step": int, "message": str, ...}
    "log"      {"level": "info"|"warning"|"error", "message": str}
    "eval"     {"step": int, "epoch": int, ...summary numbers}
    "dataset"  {"path": str, "domain": str, "task": str, "episodes": int, "frames": int, "bytes": int}
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aime_core import jsonnum

ShouldStop = Callable[[], bool]


def never_stop() -> bool:
    return False


class Sink:
    """Receives what a run reports."""

    def metrics(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        """Scalar values at an optimiser step (NaN/Inf are passed through as they are)."""

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """A status change, alert, log line, evaluation summary or dataset registration."""

    def artifact(
        self, kind: str, path: str, step: int | None = None, meta: Mapping[str, Any] | None = None
    ) -> None:
        """A file the run produced: kind is checkpoint, video, batch_dump or log."""

    def progress(
        self, done: float, total: float, unit: str, postfix: Mapping[str, Any] | None = None
    ) -> None:
        """How far the run is (episodes collected, or steps of the current epoch)."""

    def close(self) -> None:
        """Flush and release; called once at the end of the run, also on failure."""


class MultiSink(Sink):
    """Fans out to several sinks. A failing sink is reported once and does not stop the run."""

    def __init__(self, sinks: Iterable[Sink] = ()):
        self.sinks = list(sinks)
        self._warned: set[int] = set()

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args, **kwargs)
            except Exception as exc:  # one broken sink (say wandb offline) must not kill a training run
                if id(sink) not in self._warned:
                    self._warned.add(id(sink))
                    warnings.warn(f"{type(sink).__name__}.{method} failed: {exc!r}", stacklevel=2)

    def metrics(self, step, values, epoch=None):
        self._each("metrics", step, values, epoch)

    def event(self, kind, payload):
        self._each("event", kind, payload)

    def artifact(self, kind, path, step=None, meta=None):
        self._each("artifact", kind, path, step, meta)

    def progress(self, done, total, unit, postfix=None):
        self._each("progress", done, total, unit, postfix)

    def close(self):
        self._each("close")


_json_value = jsonnum.encode  # JSON has no NaN/Inf: strings keep the file standard and the value


class JsonlSink(Sink):
    """One JSON object per line in the run directory: metrics, events and artifacts, with wall time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)

    def _write(self, record: dict[str, Any]) -> None:
        record["time"] = time.time()
        self._file.write(json.dumps(record, default=str) + "\n")

    def metrics(self, step, values, epoch=None):
        self._write(
            {
                "type": "metrics",
                "step": step,
                "epoch": epoch,
                "values": {k: _json_value(float(v)) for k, v in values.items()},
            }
        )

    def event(self, kind, payload):
        self._write({"type": "event", "kind": kind, "payload": _json_value(dict(payload))})

    def artifact(self, kind, path, step=None, meta=None):
        self._write(
            {"type": "artifact", "kind": kind, "path": str(path), "step": step, "meta": dict(meta or {})}
        )

    def close(self):
        self._file.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JsonlSink file back, turning "nan"/"inf" strings into floats again."""
    out = []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "metrics":
            record["values"] = {k: jsonnum.decode(v) for k, v in record["values"].items()}
        out.append(record)
    return out


class TerminalSink(Sink):
    """A tqdm bar (episodes or epoch steps, with rate and ETA) plus alerts and log lines on stderr.

    On a terminal the bar redraws in place. Into a file or pipe (nohup, Slurm, the worker's log) a redrawn bar
    would write one carriage-return update per step; there it prints the bar as a plain line instead, at every
    5 % of the total, at most `line_seconds` apart, and at the end.
    """

    def __init__(
        self,
        desc: str = "",
        stream=None,
        show_keys: tuple[str, ...] = ("loss",),
        line_seconds: float = 30.0,
    ):
        self.desc = desc
        self.stream = stream or sys.stderr
        self.show_keys = show_keys
        self.line_seconds = line_seconds
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._bar = None
        self._total = None
        self._last: dict[str, float] = {}
        self._line_at = (-1.0, -1)  # (monotonic time, 5 % bucket) of the last plain line

    def _ensure_bar(self, total: float, unit: str):
        from tqdm import tqdm

        if self._bar is None or self._total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(
                total=total,
                unit=unit,
                desc=self.desc,
                file=self.stream if self.tty else _Discard(),
                dynamic_ncols=self.tty,
                ncols=None if self.tty else 120,
                smoothing=0.1,
            )
            self._total = total
            self._line_at = (-1.0, -1)
        return self._bar

    def progress(self, done, total, unit, postfix=None):
        bar = self._ensure_bar(total, unit)
        bar.n = done
        post = {k: v for k, v in self._last.items()}
        post.update(postfix or {})
        bar.set_postfix(
            {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in post.items()}, refresh=False
        )
        if self.tty:
            bar.refresh()
            return
        now, bucket = time.monotonic(), int(20 * done / total) if total else 0
        last_time, last_bucket = self._line_at
        if done >= (total or 0) or bucket > last_bucket or now - last_time >= self.line_seconds:
            self._line_at = (now, bucket)
            print(str(bar), file=self.stream, flush=True)

    def metrics(self, step, values, epoch=None):
        for key in self.show_keys:
            if key in values:
                self._last[key] = float(values[key])

    def event(self, kind, payload):
        if kind == "alert" or (kind == "log" and payload.get("level") in ("warning", "error")):
            self._print(f"[{kind}] {payload.get('message', payload)}")
        elif kind == "log":
            self._print(str(payload.get("message", "")))

    def _print(self, text: str) -> None:
        if self._bar is not None and self.tty:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _Discard:
    """Where a non-terminal bar draws itself: TerminalSink prints its lines instead."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class WandbSink(Sink):
    """Weights & Biases, when WANDB_PROJECT is set and wandb is installed (optional, never a dependency)."""

    def __init__(self, project: str, name: str, config: Mapping[str, Any]):
        import wandb  # noqa: PLC0415 - optional

        self._run = wandb.init(project=project, name=name, config=dict(config), reinit=True)

    def metrics(self, step, values, epoch=None):
        self._run.log(dict(values), step=step)

    def event(self, kind, payload):
        """Evaluations: the per-horizon rollout error against copy-last-frame as a line plot; alerts as text."""
        import wandb  # noqa: PLC0415 - optional

        step = payload.get("step")
        if kind == "eval" and payload.get("horizon"):
            for m in ("mse", "psnr"):
                if f"rollout_{m}" in payload and f"baseline_{m}" in payload:
                    chart = wandb.plot.line_series(
                        xs=list(payload["horizon"]),
                        ys=[list(payload[f"rollout_{m}"]), list(payload[f"baseline_{m}"])],
                        keys=["model rollout", "copy-last frame"],
                        title=f"rollout {m.upper()} per horizon step (epoch {payload.get('epoch')})",
                        xname="steps after the context",
                    )
                    self._run.log({f"eval/rollout_{m}_per_horizon": chart}, step=step)
        elif kind == "alert":
            self._run.log({"alert": wandb.Html(f"<pre>{payload.get('message', '')}</pre>")}, step=step)

    def artifact(self, kind, path, step=None, meta=None):
        """Rollout videos (truth | prediction | error), logged at their evaluation's step."""
        if kind == "video" and Path(path).is_file():
            import wandb  # noqa: PLC0415 - optional

            self._run.log({"eval/rollout_video": wandb.Video(str(path), format="mp4")}, step=step)

    def close(self):
        self._run.finish()


def maybe_wandb(project: str | None, name: str, config: Mapping[str, Any]) -> Sink | None:
    """A WandbSink if a project is given and wandb imports; otherwise None (with a note when it is missing)."""
    if not project:
        return None
    try:
        return WandbSink(project, name, config)
    except ImportError:
        print(
            f"WANDB_PROJECT={project} is set but wandb is not installed; `pip install wandb` to log there.",
            file=sys.stderr,
        )
        return None
