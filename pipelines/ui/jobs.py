"""One background job at a time for the UI: training or prediction in a child process.

The child is ``python -m pipelines.ui.worker`` (see there); its stdout+stderr go to a log file in
the output folder, which the page tails. Progress per epoch comes from ``metrics.json`` that
the trainer rewrites after every epoch; ``metrics.png`` and the prediction COG appear when done.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from geoxai.errors import InvalidInputError
from pipelines.ui.forms import CONFIG_NAME, UIPaths, config_yaml, form_to_config, writable_dir

__all__ = ["JobManager", "RESULT_PREFIX"]

RESULT_PREFIX = "GEOXAI_RESULT="
"""Start of the last stdout line of a successful worker: the path it produced."""

_TAIL_BYTES = 16_384


def _tail(log: Path, n: int = 14) -> list[str]:
    """Last ``n`` non-empty lines of ``log`` (progress bars' ``\\r`` rewrites count as lines)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [ln.rstrip() for ln in re.split(r"[\r\n]+", text)]
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln) for ln in lines if ln.strip()]
    return lines[-n:]


def _history(out_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch history from ``out_dir/metrics.json`` ([] while absent or half written)."""
    try:
        data = json.loads((out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    if isinstance(data, dict):
        data = data.get("history", [])
    return [h for h in data if isinstance(h, dict)] if isinstance(data, list) else []


class JobManager:
    """Starts, watches and stops the UI's single background job (thread-safe)."""

    def __init__(self, paths: UIPaths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._job: dict[str, Any] | None = None
        self.last_train: dict[str, Any] | None = None  # out_dir, bundle, rasters of last training

    # ---- start ---------------------------------------------------------------------------

    def _start(self, kind: str, args: list[str], out_dir: Path, info: dict[str, Any]) -> dict:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise InvalidInputError(
                    f"A {self._job['kind'] if self._job else ''} job is still running; wait for "
                    "it or press Stop."
                )
            log = out_dir / f"ui_{kind}.log"
            with open(log, "wb") as fh:
                proc = subprocess.Popen(
                    [sys.executable, "-u", "-m", "pipelines.ui.worker", *args],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=str(self.paths.root),
                )
            self._proc = proc
            self._job = {
                "kind": kind,
                "state": "running",
                "started": time.time(),
                "finished": None,
                "out_dir": str(out_dir),
                "log": str(log),
                "result": None,
                "error": None,
                **info,
            }
            job = self._job
        threading.Thread(target=self._watch, args=(proc, job), daemon=True).start()
        return self._public(job)

    def _watch(self, proc: subprocess.Popen[bytes], job: dict[str, Any]) -> None:
        rc = proc.wait()
        lines = _tail(Path(job["log"]), 200)
        result = next(
            (ln[len(RESULT_PREFIX) :] for ln in reversed(lines) if ln.startswith(RESULT_PREFIX)),
            None,
        )
        with self._lock:
            job["finished"] = time.time()
            job["returncode"] = rc
            if rc == 0 and result:
                job["state"] = "done"
                job["result"] = result
                if job["kind"] == "train":
                    self.last_train = {"out_dir": job["out_dir"], "bundle": result}
            elif job.get("stopped"):
                job["state"] = "stopped"
            else:
                job["state"] = "failed"
                err = [ln for ln in lines if ln.startswith("error:")]
                job["error"] = (err[-1] if err else "\n".join(lines[-8:])) or f"exit code {rc}"

    def start_train(self, config: Any, *, resume: bool = False) -> dict[str, Any]:
        """Save ``<out_dir>/ui_config.yaml`` and train it in a child process."""
        out_dir = Path(config.out_dir)
        writable_dir(out_dir)
        cfg_path = out_dir / CONFIG_NAME
        cfg_path.write_text(config_yaml(config))
        args = ["train", str(cfg_path)] + (["--resume"] if resume else [])
        return self._start(
            "train",
            args,
            out_dir,
            {
                "config": self.paths.relative(cfg_path),
                "command": f"geoxai train segment {cfg_path}",
            },
        )

    def start_predict(self, form: dict[str, Any]) -> dict[str, Any]:
        """Predict with a bundle over the form's rasters to a COG; ``{"errors": ...}`` if bad.

        ``form``: ``bundle`` (folder relative to the workdir; default the last training's),
        ``out`` (the COG path to write), ``rasters`` (as in the training form; empty = the
        training rasters stored in the bundle).
        """
        errors: dict[str, str] = {}
        bundle_rel = form.get("bundle") or (
            self.paths.relative(self.last_train["bundle"]) if self.last_train else ""
        )
        bundle = None
        if not bundle_rel:
            errors["predict.bundle"] = "Train a model first, or type the folder of a model bundle."
        else:
            try:
                bundle = self.paths.resolve(bundle_rel, must_exist=True)
            except InvalidInputError as exc:
                errors["predict.bundle"] = str(exc)
        out = None
        try:
            out = self.paths.resolve(form.get("out") or "")
            if out.suffix.lower() not in {".tif", ".tiff"}:
                errors["predict.out"] = "The prediction is a GeoTIFF (COG): end the name in .tif."
        except InvalidInputError as exc:
            errors["predict.out"] = str(exc)
        data, path_errors = form_to_config(self.paths, {"rasters": form.get("rasters") or []})
        if form.get("rasters"):
            errors.update({k: v for k, v in path_errors.items() if k.startswith("rasters")})
        if errors or bundle is None or out is None:
            return {"ok": False, "errors": errors}
        writable_dir(out.parent)
        rasters_json = out.parent / "ui_predict_rasters.json"
        rasters_json.write_text(json.dumps(data["rasters"]))
        job = self._start(
            "predict",
            ["predict", str(bundle), str(out), str(rasters_json)],
            out.parent,
            {"target": self.paths.relative(out)},
        )
        return {"ok": True, "errors": {}, "job": job}

    # ---- stop / status --------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the running child (kill after ``timeout`` s); no-op when idle."""
        with self._lock:
            proc, job = self._proc, self._job
            if proc is None or proc.poll() is not None:
                return
            if job is not None:
                job["stopped"] = True
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _public(self, job: dict[str, Any] | None) -> dict[str, Any]:
        if job is None:
            return {"state": "idle"}
        out = {k: v for k, v in job.items() if k not in {"log", "out_dir", "result"}}
        out["elapsed_s"] = round((job["finished"] or time.time()) - job["started"], 1)
        out["log"] = self.paths.relative(job["log"])
        out["out_dir"] = self.paths.relative(job["out_dir"])
        if job["result"]:
            out["result"] = self.paths.relative(job["result"])
        return out

    def status(self) -> dict[str, Any]:
        """The job as the page shows it: state, history, log tail and result files."""
        with self._lock:
            job = dict(self._job) if self._job else None
        st = self._public(job)
        if job is None:
            return st
        out_dir = Path(job["out_dir"])
        st["log_tail"] = [ln for ln in _tail(Path(job["log"])) if not ln.startswith(RESULT_PREFIX)]
        if job["kind"] == "train":
            st["history"] = _history(out_dir)
            files = {
                "metrics_png": out_dir / "metrics.png",
                "prediction": out_dir / "prediction.tif",
            }
            st.update({k: self.paths.relative(p) for k, p in files.items() if p.is_file()})
        return st
