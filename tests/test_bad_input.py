"""Bad input and unwritable outputs, as one table: every case exits 2 with one line naming the
file or parameter, no traceback, no output and no temporary file left behind.

The cases run in-process (``cli.main``) on tiny inputs; faults the test machine cannot produce
for real (a full disk, torch's C++ writer failing, a read-only folder when running as root) are
injected with ``monkeypatch``. The last tests check ``run -o OUTDIR`` into an existing folder:
refused without ``--overwrite`` (nothing touched), and with it the earlier set intact when the
new one fails half-way through writing.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli_inputs import leftovers, make_cli_inputs, snapshot
from conftest import one_error_line

from napari_cryo_openset.cli import main

DEVICE = ["--device", "cpu", "--threads", "1", "--quiet"]


class _RunsCode:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("true",))


# --------------------------------------------------------------------------------------------
# the bad files
# --------------------------------------------------------------------------------------------


def _edited_header(tomo: Path, out: Path, **words) -> Path:
    """A copy of ``tomo`` with header words (int32 index → value) changed."""
    raw = bytearray(tomo.read_bytes())
    header = np.frombuffer(bytes(raw[:1024]), dtype="<i4").copy()
    for index, value in words.items():
        header[int(index[1:])] = value
    raw[:1024] = header.tobytes()
    out.write_bytes(bytes(raw))
    return out


def _edited_model(model: Path, out: Path, edit) -> Path:
    data = torch.load(model, map_location="cpu", weights_only=True)
    edit(data)
    torch.save(data, out)
    return out


def _make_bad_files(folder: Path, good: dict) -> dict[str, Path]:
    tomo, model = good["tomo"], good["model"]
    text = folder / "text.mrc"
    text.write_text("this is not a map\n" * 300)
    truncated = folder / "truncated.mrc"
    truncated.write_bytes(tomo.read_bytes()[:4000])
    (folder / "garbage.star").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)))
    (folder / "nocolumns.csv").write_text("a,b\n1,2\n3,4\n")
    (folder / "words.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"
                                       "ten twenty thirty\n")
    (folder / "text.pt").write_text("not a model\n")
    (folder / "text.npz").write_text("not a simulated set\n")
    return {
        "text": text, "truncated": truncated,
        "huge_header": _edited_header(tomo, folder / "huge_header.mrc", w0=20000, w1=20000, w2=2000),
        "garbage_nsymbt": _edited_header(tomo, folder / "garbage_nsymbt.mrc", w23=2**31 - 1),
        "negative_nsymbt": _edited_header(tomo, folder / "negative_nsymbt.mrc", w23=-5),
        "mode4": _edited_header(tomo, folder / "mode4.mrc", w3=4),
        "garbage_star": folder / "garbage.star", "nocolumns": folder / "nocolumns.csv", "words": folder / "words.star",
        "text_model": folder / "text.pt", "text_source": folder / "text.npz",
        "wide_model": _edited_model(model, folder / "wide.pt",
                                    lambda d: d["architecture"]["params"].update(width=2048)),
        "big_box_model": _edited_model(model, folder / "big_box.pt",
                                       lambda d: d["architecture"]["params"].update(box=100_000)),
        "many_classes_model": _edited_model(model, folder / "many_classes.pt",
                                            lambda d: d["architecture"]["params"].update(num_classes=10**7)),
        "hidden_model": _edited_model(model, folder / "hidden.pt", lambda d: d.update(discriminator_hidden=10**7)),
        "evil_model": _edited_model(model, folder / "evil.pt", lambda d: d["provenance"].update(evil=_RunsCode())),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory, templates, simulated, train):
    folder = tmp_path_factory.mktemp("bad_input")
    good = make_cli_inputs(folder, templates, simulated, train)
    return {**good, **_make_bad_files(folder, good)}


# --------------------------------------------------------------------------------------------
# injected faults
# --------------------------------------------------------------------------------------------


def _disk_full_on_write(monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    real_open = Path.open

    def full_open(self, mode="r", *args, **kwargs):  # picks files are written a chunk at a time
        if any(c in mode for c in "wax+"):
            full(self)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(Path, "open", full_open)


def _torch_writer_fails(monkeypatch):
    def fails(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", fails)


def _folder_read_only(monkeypatch):
    real = os.access

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).endswith("out") else real(p, mode, **kw))


def _disk_nearly_full(monkeypatch):
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))


FAULTS = {"disk_full": _disk_full_on_write, "torch_save": _torch_writer_fails, "read_only": _folder_read_only,
          "no_space": _disk_nearly_full}

# --------------------------------------------------------------------------------------------
# the table: (id, argv with {names} of files and {out} the output folder, words the line must hold, fault)
# --------------------------------------------------------------------------------------------

PICK = ["pick", "{tomo}", "--diameter", "120", "--quiet", "-o", "{out}/picks.star"]
PREDICT = ["predict", "{model}", "--tomo", "{tomo}", "--picks", "{picks}", "-o", "{out}/p.star", *DEVICE]
TRAIN = ["train", "{source}", "-o", "{out}/m.pt", "--epochs", "1", *DEVICE]
SIMULATE = ["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "24", "--per-class", "2",
            "-o", "{out}/s.npz"]
ADAPT = ["adapt", "{model}", "--source", "{source}", "--tomo", "{tomo}", "--picks", "{picks}", "--method", "mluda",
         "--iterations", "2", "-o", "{out}/a.pt", "--predictions", "{out}/a.star", *DEVICE]
RUN = ["run", "--tomo", "{tomo}", "--templates", "builtin", "--diameter", "120", "--method", "mluda",
       "--picks", "{picks}", "--per-class", "4", "--epochs", "1", "--iterations", "2", "--verify-rotations", "24", "--no-align", "-o", "{out}/run",
       *DEVICE]

EXPORT = ["export", "{picks}", "--tomo", "{tomo}", "--format", "relion5", "-o", "{out}/particles.star"]
BATCH = ["batch", "{out}/../data", "-o", "{out}/b", "--templates", "builtin", "--diameter", "120", "--method",
         "mluda", *DEVICE]


def _with(argv, **changes):
    """``argv`` with option values replaced (``{"--tomo": "{text}"}``) or positional 1 (``first=``)."""
    argv = list(argv)
    if "first" in changes:
        argv[1] = changes.pop("first")
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-") if not flag.startswith("-") else flag
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


CASES = [
    # malformed MRC
    ("mrc-text", _with(PICK, first="{text}"), ["text.mrc", "not an MRC"], None),
    ("mrc-truncated", _with(PICK, first="{truncated}"), ["truncated.mrc", "truncated"], None),
    ("mrc-header-2000x20000x20000", _with(PICK, first="{huge_header}"), ["huge_header.mrc", "20000"], None),
    ("mrc-nsymbt-garbage", _with(PICK, first="{garbage_nsymbt}"), ["garbage_nsymbt.mrc", "nsymbt"], None),
    ("mrc-nsymbt-negative", _with(PICK, first="{negative_nsymbt}"), ["negative_nsymbt.mrc", "extended"], None),
    ("mrc-mode-4", _with(PICK, first="{mode4}"), ["mode4.mrc", "mode 4"], None),
    ("template-text", _with(SIMULATE, templates="{text}"), ["text.mrc", "template"], None),
    ("template-nsymbt-garbage", _with(SIMULATE, templates="{garbage_nsymbt}"), ["garbage_nsymbt.mrc", "template"],
     None),
    ("predict-tomo-truncated", _with(PREDICT, tomo="{truncated}"), ["truncated.mrc"], None),
    # malformed STAR/CSV
    ("star-garbage", _with(PREDICT, picks="{garbage_star}"), ["garbage.star"], None),
    ("csv-no-columns", _with(PREDICT, picks="{nocolumns}"), ["nocolumns.csv"], None),
    ("star-words-as-coordinates", _with(PREDICT, picks="{words}"), ["words.star"], None),
    # model and source files
    ("model-text", _with(PREDICT, first="{text_model}"), ["text.pt"], None),
    ("model-runs-code", _with(PREDICT, first="{evil_model}"), ["evil.pt", "refused"], None),
    ("model-width-2048", _with(PREDICT, first="{wide_model}"), ["wide.pt", "width", "2048"], None),
    ("model-box-100000", _with(PREDICT, first="{big_box_model}"), ["big_box.pt", "box"], None),
    ("model-classes-1e7", _with(PREDICT, first="{many_classes_model}"), ["many_classes.pt", "num_classes"], None),
    ("model-discriminator-1e7", _with(PREDICT, first="{hidden_model}"), ["hidden.pt", "discriminator_hidden"], None),
    ("adapt-model-width-2048", _with(ADAPT, first="{wide_model}"), ["wide.pt", "width"], None),
    ("train-source-text", _with(TRAIN, first="{text_source}"), ["text.npz", "simulated set"], None),
    # wrong parameters
    ("pick-diameter-negative", _with(PICK, diameter="-5"), ["--diameter"], None),
    ("simulate-box-2", _with(SIMULATE, box="2"), ["--box"], None),
    ("train-epochs-0", _with(TRAIN, epochs="0"), ["--epochs"], None),
    ("train-batch-size-1", _with(TRAIN, batch_size="1"), ["--batch-size"], None),
    ("run-box-128-on-48-deep", [*RUN, "--box", "128"], ["--box", "128", "48"], None),
    ("run-diameter-900", _with(RUN, diameter="900"), ["working box", "900"], None),
    ("run-verify-rotations-0", [*RUN, "--verify-rotations", "0"], ["--verify-rotations", "12"], None),
    ("run-verify-max-picks-0", [*RUN, "--verify-max-picks", "0"], ["--verify-max-picks"], None),
    ("predict-output-is-picks", _with(PREDICT, **{"-o": "{picks}"}), ["--picks"], None),
    ("adapt-output-is-model", _with(ADAPT, **{"-o": "{model}"}), ["model.pt", "MODEL.pt"], None),
    # outputs
    ("pick-output-is-folder", _with(PICK, **{"-o": "{out}"}), ["is a folder"], None),
    ("simulate-output-is-folder", _with(SIMULATE, **{"-o": "{out}"}), ["is a folder"], None),
    ("pick-output-folder-missing", _with(PICK, **{"-o": "{out}/missing/p.star"}), ["missing", "does not exist"], None),
    ("run-output-is-file", _with(RUN, **{"-o": "{picks}"}), ["picks.star", "is a file"], None),
    ("pick-folder-read-only", PICK, ["picks.star", "not writable"], "read_only"),
    ("adapt-predictions-read-only", _with(ADAPT, **{"-o": "{out}/../a.pt"}), ["a.star", "not writable"],
     "read_only"),
    ("train-no-space", TRAIN, ["m.pt", "MB free"], "no_space"),
    ("simulate-no-space", SIMULATE, ["s.npz", "MB free"], "no_space"),
    ("run-no-space", RUN, ["run", "MB free"], "no_space"),
    ("pick-disk-full-while-writing", PICK, ["picks.star", "No space left"], "disk_full"),
    ("train-torch-writer-fails", TRAIN, ["m.pt", "disk is full or failed"], "torch_save"),
    ("adapt-disk-full-while-writing", ADAPT, ["a.star", "No space left"], "disk_full"),
    # export and batch
    ("export-tomo-count", [*EXPORT[:3], "{tomo}", "{tomo}", *EXPORT[4:]], ["--tomo", "2 tomograms for 1 picks"], None),
    ("export-tomo-truncated", _with(EXPORT, tomo="{truncated}"), ["truncated.mrc"], None),
    ("export-folder-read-only", EXPORT, ["particles.star", "not writable"], "read_only"),
    ("export-copick-not-json", _with(EXPORT, format="copick"), ["particles.star", "config JSON"], None),
    ("batch-dataset-missing", BATCH, ["DATASET", "data", "does not exist"], None),
    ("batch-output-is-file", _with(BATCH, first="{tomo}", **{"-o": "{picks}"}), ["picks.star", "is a file"], None),
    ("batch-folder-read-only", _with(BATCH, first="{tomo}"), ["b", "not writable"], "read_only"),
    ("batch-dataset-is-a-picks-file", _with(BATCH, first="{picks}"), ["DATASET", "tomograms.star"], None),
]


def _argv(template, files, out):
    names = {k: str(v) for k, v in files.items()} | {"out": str(out)}
    return [a.format(**names) for a in template]


@pytest.mark.parametrize(("argv", "words", "fault"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(files, tmp_path, capsys, monkeypatch, argv, words, fault):
    out = tmp_path / "out"
    out.mkdir()
    args = _argv(argv, files, out)
    if fault is not None:
        FAULTS[fault](monkeypatch)
    rc = main(args)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 2, err
    line = one_error_line(err)
    for word in words:
        assert word in line, line
    assert ".part" not in line  # the user's path, never a temporary name
    assert list(out.iterdir()) == [], list(out.iterdir())  # no output, not even half of one
    assert leftovers(tmp_path) == [] and leftovers(files["tomo"].parent) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_real_read_only_folder(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(_argv(PICK, files, out)) == 2
    finally:
        out.chmod(0o755)
    assert "not writable" in one_error_line(capsys.readouterr().err)


def test_adapt_keeps_the_earlier_pair_when_one_write_fails(files, tmp_path, capsys, monkeypatch):
    """-o A.pt --predictions P.star is one unit: P failing leaves the old A.pt (and P) as they were."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.pt").write_bytes(b"earlier model")
    (out / "a.star").write_bytes(b"earlier predictions")
    before = snapshot(out)
    _disk_full_on_write(monkeypatch)
    rc = main(_argv(ADAPT, files, out))
    monkeypatch.undo()
    assert rc == 2
    assert "a.star" in one_error_line(capsys.readouterr().err)
    assert snapshot(out) == before and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# run -o OUTDIR into an existing folder
# --------------------------------------------------------------------------------------------


def _earlier_run(folder: Path) -> dict[str, bytes]:
    (folder / "averages").mkdir(parents=True)
    for name in ("picks.star", "predictions.star", "model.pt", "report.json", "averages/average_unknown.mrc"):
        (folder / name).write_bytes(f"earlier {name}\n".encode())
    return snapshot(folder)


def test_run_into_an_existing_folder_is_refused_untouched(files, tmp_path, capsys):
    outdir = tmp_path / "out" / "run"
    before = _earlier_run(outdir)
    assert main(_argv(RUN, files, tmp_path / "out")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--overwrite" in line and str(outdir) in line
    assert snapshot(outdir) == before


def test_overwrite_refuses_a_folder_of_other_files(files, tmp_path, capsys):
    outdir = tmp_path / "out" / "run"
    outdir.mkdir(parents=True)
    (outdir / "my_notes.txt").write_text("keep me")
    assert main(_argv(RUN, files, tmp_path / "out") + ["--overwrite"]) == 2
    assert "my_notes.txt" in one_error_line(capsys.readouterr().err)
    assert (outdir / "my_notes.txt").read_text() == "keep me"


def test_overwrite_keeps_the_earlier_set_when_writing_fails(files, tmp_path, capsys, monkeypatch):
    """A failure half-way through writing the new set (the map, after the tables and models)."""
    import napari_cryo_openset.pipeline as pipeline

    outdir = tmp_path / "out" / "run"
    before = _earlier_run(outdir)

    def disk_full(picks, path, title="", **_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pipeline, "plot_embedding", disk_full)
    rc = main(_argv(RUN, files, tmp_path / "out") + ["--overwrite"])
    monkeypatch.undo()
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and f"'{outdir}/embedding.png'" in line and "No space left" in line, line
    assert snapshot(outdir) == before
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_the_earlier_set_whole(files, tmp_path, capsys):
    outdir = tmp_path / "out" / "run"
    _earlier_run(outdir)
    assert main(_argv(RUN, files, tmp_path / "out") + ["--overwrite"]) == 0, capsys.readouterr().err
    report = json.loads((outdir / "report.json").read_text())
    assert sorted(report["outputs"]) == sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*") if p.is_file())
    assert (outdir / "model.pt").read_bytes() != b"earlier model.pt\n"
    assert leftovers(tmp_path) == []
