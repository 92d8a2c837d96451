"""``batch``: many tomograms on a Dask LocalCluster — failures recorded, reruns resume, killed workers retried."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_cryo_openset.batch import (  # noqa: E402
    BatchItem,
    discover,
    group_by_condition,
    is_complete,
    slurm_job_script,
)
from napari_cryo_openset.cli import main  # noqa: E402
from napari_cryo_openset.errors import ParameterError  # noqa: E402

NAMES = ("1bxn", "1qvr", "2cg9")
#: The smallest run that exercises every stage but align (tests/test_align_run.py; about 10–20 s per tomogram on 2 shared cores).
SMALL = ["--templates", "builtin", "--diameter", "120", "--method", "ada", "--per-class", "6", "--epochs", "1",
         "--iterations", "10", "--source", "isolated", "--no-estimate", "--no-match-spectrum",
         "--verify-rotations", "12", "--max-picks", "40", "--device", "cpu", "--quiet", "--no-align"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, builtin):
    """4 tomograms: 3 small simulated scenes (48×96×96 at 10 Å) and one corrupt file."""
    from napari_cryo_openset.io import write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    d = tmp_path_factory.mktemp("dataset")
    templates = builtin(NAMES, 10.0)
    for i in range(3):
        volume, _ = make_scene(SceneParams(shape=(48, 96, 96), condition=ImagingCondition(voxel_size=10.0, snr=1.0),
                                           templates=tuple(templates), n_particles=24, unknown_fraction=0.25, seed=i))
        write_tomogram(d / f"TS_0{i + 1}.mrc", volume, 10.0)
    (d / "TS_04.mrc").write_bytes(b"this is not an MRC file" * 100)
    return d


def _outputs(folder: Path) -> dict[str, float]:
    """Modification times of a batch's per-tomogram files (to see what a rerun recomputed)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_discover_folder_groups_and_records_the_corrupt_file(dataset):
    kind, items = discover(dataset)
    assert kind == "folder" and [i.name for i in items] == ["TS_01", "TS_02", "TS_03", "TS_04"]
    bad = items[3]
    assert bad.error is not None and "TS_04.mrc" in bad.error and "\n" not in bad.error
    assert list(group_by_condition(items)) == ["10A"] and len(group_by_condition(items)["10A"]) == 3


def test_discover_tomograms_star_and_copick(dataset, tmp_path):
    from napari_cryo_openset.io.relion5 import TomogramInfo, write_tomograms_star

    infos = [TomogramInfo(f"TS_0{i}", path=dataset / f"TS_0{i}.mrc", shape=(48, 96, 96), voxel_size=10.0,
                          tilt_series_pixel_size=2.5, voltage=300.0, cs=2.7) for i in (1, 2)]
    star = write_tomograms_star(tmp_path / "tomograms.star", infos)
    kind, items = discover(star)
    assert kind == "relion5" and [i.condition for i in items] == ["10A_300kV_cs2.7"] * 2
    missing = write_tomograms_star(tmp_path / "bad.star", infos + [TomogramInfo("TS_09", path=tmp_path / "x.mrc",
                                                                                shape=(4, 4, 4), voxel_size=10.0)])
    with pytest.raises(ParameterError, match="TS_09"):
        discover(missing)
    pytest.importorskip("copick")
    from napari_cryo_openset.io import copick_io

    root = copick_io.new_project(tmp_path / "cp" / "config.json", tmp_path / "cp" / "overlay")
    root.new_run("TS_01").new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(np.zeros((8, 16, 16), np.float32))
    kind, items = discover(tmp_path / "cp" / "config.json")
    assert kind == "copick" and items[0].name == "TS_01" and items[0].shape == (8, 16, 16)


def test_mixed_voxel_sizes_make_two_conditions():
    items = [BatchItem("a", voxel_size=10.0), BatchItem("b", voxel_size=7.5), BatchItem("c", voxel_size=10.0),
             BatchItem("d", error="corrupt")]
    groups = group_by_condition(items)
    assert {k: [i.name for i in v] for k, v in groups.items()} == {"10A": ["a", "c"], "7.5A": ["b"]}


def test_slurm_job_script_without_slurm():
    pytest.importorskip("dask_jobqueue")
    script = slurm_job_script(cores=8, memory="32GB", walltime="04:00:00", queue="gpu", account="lab")
    assert "#SBATCH" in script and "--cpus-per-task=8" in script and "-t 04:00:00" in script
    assert "-p gpu" in script and "-A lab" in script and "--nworkers 8" in script and "--nthreads 1" in script
    assert "OMP_NUM_THREADS=1" in script


@pytest.mark.parametrize(("argv", "match"), [
    (["DATA", "-o", "OUT", "--scheduler", "tcp://127.0.0.1:9"], "--scheduler 'tcp://127.0.0.1:9': cannot reach"),
    (["NOPE", "-o", "OUT"], "DATASET '.*NOPE' does not exist"),
    (["DATA", "-o", "FILE"], "-o '.*FILE' is a file"),
    (["DATA", "-o", "OUT", "--workers", "0"], "--workers must be ≥ 1"),
    (["DATA", "-o", "OUT", "--model", "m.pt"], "--model and --source-set go together"),
])
def test_batch_bad_input_is_one_line(dataset, tmp_path, capsys, argv, match):
    import re

    (tmp_path / "FILE").write_text("x")
    subs = {"DATA": str(dataset), "OUT": str(tmp_path / "out"), "FILE": str(tmp_path / "FILE"),
            "NOPE": str(tmp_path / "NOPE")}
    args = ["batch", *[subs.get(a, a) for a in argv], *SMALL]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("napari-cryo-openset")]
    assert len(err) == 1 and re.search(match, err[0]), err


def test_batch_unwritable_output(dataset, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["batch", str(dataset), "-o", str(ro / "out"), *SMALL]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


@pytest.fixture(scope="module")
def first_batch(dataset, tmp_path_factory):
    """The data set's batch on a LocalCluster of 2 workers: (OUTDIR, seconds, stderr). Tests copy it to change it."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("batch") / "out"
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        rc = main(["batch", str(dataset), "-o", str(out), "--workers", "2", "--warp", *SMALL])
    assert rc == 0, err.getvalue()
    return out, time.perf_counter() - t0, err.getvalue()


def test_batch_four_tomograms_one_corrupt_then_rerun(dataset, first_batch, tmp_path, capsys):
    """The acceptance test: 2 workers, 4 tomograms, one corrupt → 3 complete outputs + a recorded error;
    the rerun recomputes nothing."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(first_batch[0], out)
    first, err = first_batch[1], first_batch[2]
    assert "Dask dashboard: http" in err and "2 worker(s)" in err
    report = json.loads((out / "batch_report.json").read_text())
    status = {r["name"]: r for r in report["tomograms"]}
    assert [status[n]["status"] for n in ("TS_01", "TS_02", "TS_03")] == ["done"] * 3
    assert status["TS_04"]["status"] == "failed" and "not an MRC file" in status["TS_04"]["error"]
    assert "\n" not in status["TS_04"]["error"]
    assert report["cluster"]["workers"] == 2 and report["sources"]["10A"]["reference"] == "TS_01"
    assert len({status[n]["worker"] for n in ("TS_01", "TS_02", "TS_03")}) >= 1
    for name in ("TS_01", "TS_02", "TS_03"):
        assert is_complete(out / "tomograms" / name)
    assert not (out / "tomograms" / "TS_04").exists()
    assert not [p for p in (out / "tomograms").iterdir() if p.name.startswith(".")]  # no temporaries left
    assert (out / "sources" / "10A" / "model.pt").is_file()
    # the combined RELION 5 particles: every pick of the three, rlnTomoName, centred Å
    import starfile

    from napari_cryo_openset.io import read_picks
    from napari_cryo_openset.io.relion5 import read_relion5_particles, read_tomograms_star

    parts = starfile.read(out / "particles.star")["particles"]
    n = {name: len(read_picks(out / "tomograms" / name / "predictions.star")) for name in ("TS_01", "TS_02", "TS_03")}
    assert parts["rlnTomoName"].value_counts().to_dict() == n
    back = read_relion5_particles(out / "particles.star", read_tomograms_star(out / "tomograms.star"))
    pred = read_picks(out / "tomograms" / "TS_02" / "predictions.star")
    np.testing.assert_allclose(back["TS_02"][["z", "y", "x"]].to_numpy(), pred[["z", "y", "x"]].to_numpy(), atol=1e-9)
    assert report["class_counts"] == {c: int(sum(status[t]["class_counts"].get(c, 0) for t in n))
                                      for c in report["class_counts"]}
    assert (out / "class_counts.csv").read_text().startswith("tomogram,")
    from napari_cryo_openset.io.warp import read_warp_star

    warp = read_warp_star(out / "particles_warp.star")
    assert {k: len(v) for k, v in warp.items()} == n
    assert report["peak_rss_mb_per_worker"] and max(report["peak_rss_mb_per_worker"].values()) < 4000

    before = _outputs(out / "tomograms")
    t0 = time.perf_counter()
    assert main(["batch", str(dataset), "-o", str(out), "--workers", "2", *SMALL]) == 0
    rerun = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "3 tomogram(s) complete from an earlier run, skipped" in err
    assert _outputs(out / "tomograms") == before  # nothing recomputed
    report = json.loads((out / "batch_report.json").read_text())
    assert report["status_counts"] == {"skipped": 3, "failed": 1}
    with capsys.disabled():
        print(f"\nbatch acceptance: first run {first:.1f} s (3 tomograms + source stage "
              f"{json.loads((out / 'sources' / '10A' / 'source.json').read_text())['seconds']:.1f} s), rerun {rerun:.1f} s")


def test_batch_redoes_a_damaged_tomogram_with_the_saved_source(dataset, first_batch, tmp_path, capsys):
    """A damaged output is not taken as complete: the rerun redoes that tomogram only, with the saved source
    model, and gets the same result."""
    import shutil

    from napari_cryo_openset.io import read_picks

    out = tmp_path / "out"
    shutil.copytree(first_batch[0], out)
    earlier = read_picks(out / "tomograms" / "TS_03" / "predictions.star")
    (out / "tomograms" / "TS_03" / "predictions.star").unlink()
    assert not is_complete(out / "tomograms" / "TS_03")
    assert main(["batch", str(dataset), "-o", str(out), "--workers", "2", *SMALL]) == 0
    assert "source model of an earlier run (trained on TS_01)" in capsys.readouterr().err
    assert read_picks(out / "tomograms" / "TS_03" / "predictions.star").equals(earlier)
    report = json.loads((out / "batch_report.json").read_text())
    assert {r["name"]: r["status"] for r in report["tomograms"]} == {
        "TS_01": "skipped", "TS_02": "skipped", "TS_03": "done", "TS_04": "failed"}


@pytest.mark.slow
def test_batch_survives_a_killed_worker(dataset, tmp_path):
    """A worker killed while it runs a tomogram: the task is rescheduled, the batch completes, and the other
    tomograms' results are identical to an undisturbed batch's."""
    from distributed import Client, LocalCluster

    from napari_cryo_openset.batch import discover, run_batch
    from napari_cryo_openset.cli import build_parser
    from napari_cryo_openset.cli.run import run_params_from_args
    from napari_cryo_openset.io import read_picks
    from napari_cryo_openset.simulate.templates import load_templates

    args = build_parser().parse_args(["batch", str(dataset), "-o", "x", *SMALL])
    from dataclasses import replace

    params = replace(run_params_from_args(args), threads=1)
    _, items = discover(dataset)
    items = [i for i in items if i.error is None]

    def templates_for(vs):
        return load_templates(["builtin"], vs)

    def batch(out, kill=None):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        client = Client(cluster)
        killed = {}

        def killer(futures):
            target = next(f for f, item in futures.items() if item.name == kill)

            def watch():
                pids = client.run(os.getpid)
                for _ in range(600):
                    for addr, keys in client.processing().items():
                        if target.key in keys:
                            time.sleep(1.0)  # well inside the task's 8 s delay
                            os.kill(pids[addr], signal.SIGKILL)
                            killed["worker"], killed["pid"] = addr, pids[addr]
                            return
                    time.sleep(0.1)
            threading.Thread(target=watch, daemon=True).start()

        try:
            result = run_batch(items, templates_for, params, out, client=client, retries=2, say=lambda s: None,
                               delays={kill: 8.0} if kill else None, on_submitted=killer if kill else None)
        finally:
            client.close()
            cluster.close()
        return result, killed

    ref, _ = batch(tmp_path / "ref")
    res, killed = batch(tmp_path / "killed", kill="TS_02")
    assert killed, "the worker was not killed"
    assert [r["status"] for r in res.records] == ["done"] * 3
    assert res.records[1]["pid"] != killed["pid"]  # TS_02 ran again, in another worker process
    for name in ("TS_01", "TS_02", "TS_03"):
        a = read_picks(tmp_path / "ref" / "tomograms" / name / "predictions.star")
        b = read_picks(tmp_path / "killed" / "tomograms" / name / "predictions.star")
        assert a.equals(b), name
    assert not [p for p in (tmp_path / "killed" / "tomograms").iterdir() if p.name.startswith(".")]


def test_condition_params_take_the_microscope_of_the_data_set_unless_told():
    from napari_cryo_openset.batch import condition_params
    from napari_cryo_openset.params import PickingParams, RunParams

    params = RunParams(PickingParams(diameter=120.0), given=("voxel_size",))
    item = BatchItem("a", voxel_size=10.0, voltage=200.0, cs=2.0, amplitude_contrast=0.1)
    p = condition_params(params, item)
    c = p.source.condition
    assert (c.voltage, c.cs, c.amplitude_contrast) == (200.0, 2.0, 0.1)
    assert {"voltage", "cs", "amplitude_contrast"} <= set(p.given)
    told = condition_params(params, item, told={"voltage"})
    assert told.source.condition.voltage == params.source.condition.voltage and told.source.condition.cs == 2.0
    assert condition_params(params, BatchItem("b", voxel_size=10.0)) is params


@pytest.mark.slow
def test_batch_ctrl_c_stops_cleanly_and_the_rerun_finishes(dataset, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) after the first tomogram: exit 130,
    the complete tomograms and the report are kept, no worker is left; the rerun does only the rest."""
    import subprocess
    import sys

    out = tmp_path / "out"
    exe = str(Path(sys.executable).parent / "napari-cryo-openset")
    cmd = [exe, "batch", str(dataset), "-o", str(out), "--workers", "1", *SMALL]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "[1/3]" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    report = json.loads((out / "batch_report.json").read_text())
    assert report["interrupted"] and report["status_counts"].get("done") == 1
    first = next(r["name"] for r in report["tomograms"] if r["status"] == "done")
    assert is_complete(out / "tomograms" / first)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "batch_report.json").read_text())
    status = {t["name"]: t["status"] for t in report["tomograms"]}
    assert status[first] == "skipped" and sorted(status.values()) == ["done", "done", "failed", "skipped"]
    assert not [p for p in (out / "tomograms").iterdir() if p.name.startswith(".")]


def test_existing_scheduler_by_address():
    from distributed import LocalCluster

    from napari_cryo_openset.batch import ClusterSpec, describe_client, make_client

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        client, owned = make_client(ClusterSpec(scheduler=cluster.scheduler_address))
        try:
            assert owned is None and describe_client(client)["workers"] == 1
            assert client.submit(lambda x: x + 1, 1).result() == 2
        finally:
            client.close()


def test_trained_from_model_and_source_set(tmp_path):
    """``--model M.pt --source-set S.npz``: the TrainResult the runs share, built from the two files."""
    from napari_cryo_openset.batch import trained_from_model
    from napari_cryo_openset.train import stratified_split

    assert main(["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "24", "--per-class", "4",
                 "--decoys", "4", "--empty", "2", "-o", str(tmp_path / "s.npz")]) == 0
    assert main(["train", str(tmp_path / "s.npz"), "-o", str(tmp_path / "m.pt"), "--epochs", "1", "--device", "cpu",
                 "--threads", "1", "--quiet"]) == 0
    trained = trained_from_model(tmp_path / "m.pt", tmp_path / "s.npz")
    assert trained.box == 24 and trained.voxel_size == 10.0 and len(trained.data) == 6 * 4 + 4 + 2
    assert "unknown" in trained.class_names
    _, val = stratified_split(trained.data.labels, 0.15, 0)
    assert np.array_equal(trained.val_indices, val)


# --------------------------------------------------------------------------------------------
# --joint: one adaptation per condition to the pooled picks of its tomograms
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def joint_batch(dataset, first_batch, tmp_path_factory):
    """``batch --joint`` on the data set plus a constant tomogram (readable, but picking fails), 2 workers,
    starting from the first batch's saved source model (the same parameters: reused, so no source stage).
    Returns (DATASET, OUTDIR, stderr)."""
    import contextlib
    import io
    import shutil

    from napari_cryo_openset.io import write_tomogram

    root = tmp_path_factory.mktemp("joint")
    data = root / "data"
    data.mkdir()
    for p in sorted(dataset.iterdir()):
        (data / p.name).symlink_to(p)
    write_tomogram(data / "TS_05.mrc", np.zeros((48, 96, 96), np.float32), 10.0)
    out = root / "out"
    out.mkdir()
    shutil.copytree(first_batch[0] / "sources", out / "sources")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["batch", str(data), "-o", str(out), "--workers", "2", "--joint", *SMALL])
    assert rc == 0, err.getvalue()
    return data, out, err.getvalue()


def _weights(path) -> dict:
    from napari_cryo_openset.checkpoint import load_bundle

    bundle = load_bundle(path)
    return {**{f"e.{k}": v for k, v in bundle.model.encoder.state_dict().items()},
            **{f"h.{k}": v for k, v in bundle.model.head.state_dict().items()}}


def test_joint_batch_one_adapted_model_for_the_group_then_rerun(joint_batch, capsys):
    """3 complete outputs predicted with one model adapted to the pooled picks of the 3 tomograms; the
    corrupt file and the tomogram that cannot be picked are recorded and left out of the pool; a rerun
    reuses the joint model and recomputes nothing."""
    import torch

    from napari_cryo_openset.batch import joint_id
    from napari_cryo_openset.io import read_picks

    data, out, err = joint_batch
    good = ("TS_01", "TS_02", "TS_03")
    report = json.loads((out / "batch_report.json").read_text())
    status = {r["name"]: r for r in report["tomograms"]}
    assert [status[n]["status"] for n in good] == ["done"] * 3
    assert all(status[n]["adaptation"] == "joint" for n in good)
    assert status["TS_04"]["status"] == "failed" and "not an MRC file" in status["TS_04"]["error"]
    assert status["TS_05"]["status"] == "failed" and "constant" in status["TS_05"]["error"]
    assert "left out of the joint adaptation" in err and "\n" not in status["TS_05"]["error"]
    assert not (out / "tomograms" / "TS_05").exists()
    pooled = sum(int((read_picks(out / "tomograms" / n / "picks.star")["curation"] != "rejected").sum()) for n in good)
    joint = report["sources"]["10A"]["joint"]
    assert joint["tomograms"] == list(good) and joint["pooled_picks"] == pooled == joint["adaptation_picks"]
    shared = _weights(out / "sources" / "10A" / "adapted_joint.pt")
    for name in good:
        folder = out / "tomograms" / name
        assert is_complete(folder, joint=joint["id"]) and not is_complete(folder, joint=False)
        run = json.loads((folder / "report.json").read_text())
        assert run["adaptation"]["mode"] == "joint" and "adapt" not in run["timings_s"]
        assert run["adaptation"]["joint"] == {"tomograms": list(good), "pooled_picks": pooled,
                                              "adaptation_picks": pooled, "id": joint["id"]}
        own = _weights(folder / "adapted.pt")
        assert own.keys() == shared.keys() and all(torch.equal(own[k], shared[k]) for k in own)
    assert (out / "particles.star").is_file()

    before = _outputs(out / "tomograms")
    joint_pt = (out / "sources" / "10A" / "adapted_joint.pt").stat().st_mtime_ns
    assert main(["batch", str(data), "-o", str(out), "--workers", "2", "--joint", *SMALL]) == 0
    err = capsys.readouterr().err
    assert "3 tomogram(s) complete from an earlier run, skipped" in err
    assert _outputs(out / "tomograms") == before
    assert (out / "sources" / "10A" / "adapted_joint.pt").stat().st_mtime_ns == joint_pt
    status = {r["name"]: r["status"] for r in json.loads((out / "batch_report.json").read_text())["tomograms"]}
    assert status == {"TS_01": "skipped", "TS_02": "skipped", "TS_03": "skipped", "TS_04": "failed", "TS_05": "failed"}
    # another tomogram set or other parameters: another joint model (not reused, outputs not complete)
    from napari_cryo_openset.batch import _saved_joint, discover

    _, items = discover(data)
    items = [i for i in items if i.error is None]
    assert _saved_joint(out, "10A", joint["id"]) is not None and _saved_joint(out, "10A", "0" * 12) is None
    assert joint_id(_params(), items) != joint_id(_params(), items[:-1])
    assert joint_id(_params(), items) != joint_id(_params("--iterations", "11"), items)
    assert joint_id(_params(), items) == joint_id(_params(), items)


def _params(*extra):
    from dataclasses import replace

    from napari_cryo_openset.cli import build_parser
    from napari_cryo_openset.cli.run import run_params_from_args

    args = build_parser().parse_args(["batch", "DATA", "-o", "x", *SMALL, *extra])
    return replace(run_params_from_args(args), threads=1)


def test_joint_pool_is_capped_by_a_seeded_subset(joint_batch):
    """The pooled picks of the tomograms, capped at max_target_picks: the seeded subset of the pool, each
    tomogram's share cut from its own (memory-mapped) file."""
    from dataclasses import replace

    from napari_cryo_openset.adapt import AdaptParams, adapt_to_tomograms
    from napari_cryo_openset.adapt.run import subset_rows
    from napari_cryo_openset.batch import trained_from_model
    from napari_cryo_openset.checkpoint import bundle_from_training
    from napari_cryo_openset.io import read_picks, read_tomogram
    from napari_cryo_openset.progress import run_to_completion

    data, out, _ = joint_batch
    trained = trained_from_model(out / "sources" / "10A" / "model.pt", out / "sources" / "10A" / "source.npz")
    picks = {n: (read_picks(out / "tomograms" / n / "picks.star"), "dark") for n in ("TS_01", "TS_02", "TS_03")}
    total = sum(int((p["curation"] != "rejected").sum()) for p, _ in picks.values())
    params = replace(AdaptParams(method="ada", iterations=2, device="cpu", threads=1, eval_every=1),
                     max_target_picks=16)
    opened = []

    def open_tomogram(name):
        opened.append(name)
        return read_tomogram(data / f"{name}.mrc")

    result = run_to_completion(adapt_to_tomograms(bundle_from_training(trained), trained.data, picks, open_tomogram,
                                                  params))
    joint = result.bundle.provenance["adaptation"]["joint"]
    assert joint == {"tomograms": ["TS_01", "TS_02", "TS_03"], "pooled_picks": total, "adaptation_picks": 16}
    assert len(result.predictions.class_name) == 16
    rows = subset_rows(total, 16, params.seed)
    n1 = len(picks["TS_01"][0])
    assert opened == [n for n, lo, hi in (("TS_01", 0, n1), ("TS_02", n1, n1 + len(picks["TS_02"][0])),
                                          ("TS_03", n1 + len(picks["TS_02"][0]), total))
                      if ((rows >= lo) & (rows < hi)).any()]


def test_pooled_boxes_index_like_the_concatenation():
    import torch

    from napari_cryo_openset.boxes import PooledBoxes, cache_if_small, take_rows

    parts = [torch.randn(n, 1, 4, 4, 4) for n in (3, 5, 2)]
    pooled = PooledBoxes(parts)
    whole = torch.cat(parts)
    assert len(pooled) == 10 and tuple(pooled.shape) == (10, 1, 4, 4, 4) and pooled.nbytes == whole.nbytes
    assert torch.equal(pooled[2:7], whole[2:7]) and torch.equal(pooled[9], whole[9])
    rows = np.array([0, 4, 7, 8])
    assert torch.equal(pooled[rows], whole[rows])
    sub = take_rows(pooled, rows)
    assert isinstance(sub, PooledBoxes) and torch.equal(cache_if_small(sub), whole[rows])


def test_a_local_cluster_gets_one_worker_per_gpu_and_each_worker_its_own_gpu(monkeypatch):
    """No GPU here: CUDA is faked; the mapping (workers = GPUs, worker i → cuda:i mod GPUs) is what is tested."""
    import torch

    from napari_cryo_openset.batch import default_workers, worker_device
    from napari_cryo_openset.device import cpu_count

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_workers("auto") == max(1, cpu_count())
    assert worker_device("auto", 3) == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert default_workers("auto") == 2 and default_workers("cuda") == 2
    assert default_workers("cpu") == max(1, cpu_count())  # the user asked for the CPU
    assert [worker_device("auto", i) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda:1", 0) == "cuda:1" and worker_device("cpu", 1) == "cpu"  # as asked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_device("auto", 5) == "auto"  # one GPU: every worker uses it as 'auto' does


def test_batch_classifies_given_picks_and_refuses_picks_outside_their_tomogram(dataset, tmp_path, capsys):
    """--picks-dir: TS_01's own picks are classified as given (no DoG picking); TS_02's file has a pick
    outside the volume → recorded with one line naming the file; TS_03 has none → picked as usual."""
    import shutil

    from napari_cryo_openset.io import read_picks, write_picks
    from napari_cryo_openset.picks import make_picks

    data = tmp_path / "data"
    data.mkdir()
    for name in ("TS_01", "TS_02", "TS_03"):
        shutil.copy(dataset / f"{name}.mrc", data / f"{name}.mrc")
    given = tmp_path / "picks"
    given.mkdir()
    mine = make_picks([[24.0, 30.0 + 2 * i, 40.0 + 3 * i] for i in range(17)])
    write_picks(given / "TS_01.star", mine, voxel_size=10.0)
    write_picks(given / "TS_02.star", make_picks([[24.0, 48.0, 48.0], [24.0, 48.0, 500.0]]), voxel_size=10.0)
    out = tmp_path / "out"
    assert main(["batch", str(data), "-o", str(out), "--workers", "1", "--picks-dir", str(given), *SMALL]) == 0
    err = capsys.readouterr().err
    assert "given picks for 2 of 3 tomogram(s)" in err
    status = {r["name"]: r for r in json.loads((out / "batch_report.json").read_text())["tomograms"]}
    assert status["TS_01"]["status"] == "done" and status["TS_03"]["status"] == "done"
    assert status["TS_02"]["status"] == "failed" and "TS_02.star" in status["TS_02"]["error"]
    assert "outside the tomogram" in status["TS_02"]["error"] and "\n" not in status["TS_02"]["error"]
    picks = read_picks(out / "tomograms" / "TS_01" / "predictions.star")
    assert len(picks) == 17 and np.allclose(picks[["z", "y", "x"]].to_numpy(), mine[["z", "y", "x"]].to_numpy())
    report = json.loads((out / "tomograms" / "TS_01" / "report.json").read_text())
    assert report["picking"].get("given") is True
    assert main(["batch", str(data), "-o", str(tmp_path / "o2"), "--picks-dir", str(tmp_path / "nowhere"), *SMALL]) == 2
    assert "--picks-dir" in capsys.readouterr().err
