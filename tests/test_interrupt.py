"""SIGINT and SIGTERM during ``pick``, ``simulate``, ``train``, ``adapt`` and ``run``.

Each case runs the real command in a subprocess on tiny inputs, with a small wrapper that prints
a marker line on stderr and pauses at one *moment* — ``compute`` (inside the job, at its first
progress event) or ``write`` (the outputs' temporaries written, not yet renamed into place) —
and the test sends the signal when the marker appears. Then:

- the exit status is 130 (SIGINT) or 143 (SIGTERM), with exactly one ``napari-cryo-openset:``
  line and no traceback;
- the earlier outputs at the targets (written before the case) are byte-identical;
- no temporary file or folder (``.NAME.*.part…``, ``.NAME.*.old``) is left anywhere.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _cli_inputs import leftovers, make_cli_inputs, snapshot

PROG = "napari-cryo-openset:"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
#: The command, run with a pause at ``argv[1]`` (the moment) before ``main(argv[2:])``.
WRAPPER = r'''
import contextlib, sys, time
from napari_cryo_openset import progress
from napari_cryo_openset.io import _atomic

def mark(moment):
    print(f"MARK {moment}", file=sys.stderr, flush=True)
    time.sleep(120)  # the signal arrives here

def marked(job):
    try:
        event = next(job)
    except StopIteration as stop:
        return stop.value
    mark("compute")
    yield event
    return (yield from job)

moment = sys.argv[1]
if moment == "write":
    original = _atomic.atomic_paths

    @contextlib.contextmanager
    def paused(paths):
        with original(paths) as temps:
            yield temps
            mark("write")
    _atomic.atomic_paths = paused
else:
    for name in ("run_with_tqdm", "run_to_completion"):
        def wrap(job, *args, _original=getattr(progress, name), **kwargs):
            return _original(marked(job), *args, **kwargs)
        setattr(progress, name, wrap)

from napari_cryo_openset.cli import main
sys.exit(main(sys.argv[2:]))
'''
DEVICE = ("--device", "cpu", "--threads", "1", "--quiet")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, templates, simulated, train):
    return make_cli_inputs(tmp_path_factory.mktemp("interrupt_inputs"), templates, simulated, train)


def command(name: str, inputs: dict, out: Path) -> list[str]:
    """argv of a small ``name`` run writing into ``out`` (its earlier outputs already there)."""
    i = {k: str(v) for k, v in inputs.items()}
    return {
        "pick": ["pick", i["tomo"], "--diameter", "120", "-o", str(out / "picks.star"), "--quiet"],
        "simulate": ["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "24", "--per-class", "4",
                     "-o", str(out / "source.npz")],
        "train": ["train", i["source"], "-o", str(out / "model.pt"), "--epochs", "1", *DEVICE],
        "adapt": ["adapt", i["model"], "--source", i["source"], "--tomo", i["tomo"], "--picks", i["picks"],
                  "--method", "mluda", "--iterations", "2", "-o", str(out / "adapted.pt"),
                  "--predictions", str(out / "predictions.star"), *DEVICE],
        "run": ["run", "--tomo", i["tomo"], "--templates", "builtin", "--diameter", "120", "--method", "mluda",
                "--picks", i["picks"], "--per-class", "4", "--epochs", "1", "--iterations", "2", "--verify-rotations", "24",
                "--no-align", "-o", str(out / "run"), "--overwrite", *DEVICE],
    }[name]


def earlier_outputs(name: str, out: Path) -> None:
    """What an earlier run left at the targets (known bytes)."""
    files = {"pick": ["picks.star"], "simulate": ["source.npz"], "train": ["model.pt"],
             "adapt": ["adapted.pt", "predictions.star"],
             "run": ["run/picks.star", "run/model.pt", "run/report.json", "run/averages/average_unknown.mrc"]}[name]
    for f in files:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_bytes(f"earlier {f}\n".encode())


def interrupt_at_marker(argv: list[str], moment: str, sig: int, timeout: float = 120):
    """Run the wrapped command, send ``sig`` once the marker is on stderr; return (rc, stderr, seen)."""
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, moment, *argv], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines, seen = [], False
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(f"MARK {moment}") and not seen:
                seen = True
                proc.send_signal(sig)
        rc = proc.wait()
    finally:
        watchdog.cancel()
    return rc, "".join(lines), seen


CASES = [(name, moment, sig) for name in ("pick", "simulate", "train", "adapt", "run")
         for moment in ("compute", "write") for sig in (signal.SIGINT, signal.SIGTERM)]


@pytest.mark.parametrize(("name", "moment", "sig"), CASES,
                         ids=[f"{n}-{m}-{signal.Signals(s).name}" for n, m, s in CASES])
def test_interrupted_command_is_clean(inputs, tmp_path, name, moment, sig):
    out = tmp_path / "out"
    out.mkdir()
    earlier_outputs(name, out)
    before = snapshot(out)
    rc, err, seen = interrupt_at_marker(command(name, inputs, out), moment, sig)
    assert seen, err
    assert rc == EXIT[sig], err
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith(PROG)]
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert len(ours) == 1 and word in ours[0], err
    assert snapshot(out) == before  # the earlier outputs, byte for byte, and nothing else
    assert leftovers(tmp_path) == [] and leftovers(inputs["tomo"].parent) == []


def test_a_large_temporary_exists_while_writing_and_goes_on_sigterm(inputs, tmp_path):
    """simulate's .npz temporary is really on disk at the write marker, and is gone after SIGTERM."""
    out = tmp_path / "out"
    out.mkdir()
    argv = command("simulate", inputs, out)
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "write", *argv], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    during = {}
    try:
        for line in proc.stderr:
            if line.startswith("MARK write"):
                during = {p: Path(p).stat().st_size for p in leftovers(out)}
                proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
    finally:
        watchdog.cancel()
    assert rc == 143
    assert len(during) == 1 and next(iter(during)).endswith(".npz") and min(during.values()) > 100_000, during
    assert leftovers(out) == [] and not (out / "source.npz").exists()
