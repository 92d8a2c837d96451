"""progress.py: a log (stderr not a terminal) gets plain periodic lines with elapsed and remaining time."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from napari_cryo_openset.progress import PlainLines, Progress, run_with_tqdm


def test_plain_lines_at_start_every_interval_and_at_the_end():
    now = [0.0]
    out = io.StringIO()
    report = PlainLines(out, interval=10.0, clock=lambda: now[0])
    for step in range(0, 101):
        now[0] = step * 0.5  # 0.5 s per step: 50 s in all
        report(Progress("train", step, 100, message=f"epoch {step // 10}"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 0/100 (0%), 00:00 elapsed — epoch 0"
    assert lines[-1].startswith("train: 100/100 (100%), 00:50 elapsed")
    assert 5 <= len(lines) <= 7  # start, one per 10 s, the end: not one per step
    middle = next(line for line in lines if line.startswith("train: 20/100"))
    assert "00:10 elapsed, ~00:40 left" in middle


def test_run_with_tqdm_writes_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    err = io.StringIO()  # not a tty
    monkeypatch.setattr(sys, "stderr", err)

    def job():
        for i in range(3):
            yield Progress("pick", i + 1, 3)
        return "done"

    assert run_with_tqdm(job(), desc="pick") == "done"
    assert "pick: 1/3 (33%)" in err.getvalue() and "pick: 3/3 (100%)" in err.getvalue()
    err.truncate(0)
    assert run_with_tqdm(job(), desc="pick", disable=True) == "done" and err.getvalue().strip("\x00") == ""


def test_a_cli_run_into_a_log_is_not_silent(tmp_path):
    from napari_cryo_openset.io import write_tomogram
    from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

    volume, _ = blob_tomogram(BlobTomogramParams(shape=(32, 64, 64), n_particles=6, voxel_size=10.0, diameter=120.0))
    tomo = write_tomogram(tmp_path / "t.mrc", volume, 10.0)
    env = {**os.environ, "NAPARI_CRYO_OPENSET_PROGRESS_INTERVAL": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    with open(tmp_path / "log.txt", "w") as log:  # stderr into a file, as in a batch job
        result = subprocess.run([sys.executable, "-m", "napari_cryo_openset.cli", "pick", str(tomo), "--diameter",
                                 "120", "-o", str(tmp_path / "p.star")], stdout=subprocess.PIPE, stderr=log,
                                text=True, timeout=300, env=env)
    text = (tmp_path / "log.txt").read_text()
    assert result.returncode == 0, text
    progress = [line for line in text.splitlines() if " elapsed" in line]
    assert progress and any("(100%)" in line for line in progress), text
    assert "\r" not in text  # no bar redraws in the log
