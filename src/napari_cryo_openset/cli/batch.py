"""``napari-cryo-openset batch DATASET -o OUTDIR --templates … --diameter Å --method ada|mluda``.

The ``run`` pipeline on every tomogram of a data set — a folder of MRCs, a RELION 5
``tomograms.star`` or a copick config — on Dask (:mod:`napari_cryo_openset.batch`): one source
model per imaging condition (or ``--model`` + ``--source-set``), one task per tomogram, a folder per
tomogram with the ``run`` contract (``OUTDIR/tomograms/<name>/``), a combined RELION 5
``particles.star`` (+ ``tomograms.star``, ``class_counts.csv``) and ``batch_report.json``. A
LocalCluster of one single-threaded worker per core by default; ``--scheduler ADDRESS`` for an
existing cluster; ``--slurm-jobs N`` (and ``--slurm-*``) for Slurm through dask-jobqueue
(``--slurm-print-script`` prints the job script and exits). ``--joint`` adapts once per condition to the
pooled picks of its tomograms and predicts every tomogram with that model. Rerunning the same command skips the
tomograms whose outputs are complete; Ctrl-C stops cleanly (exit 130).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import CryoOpensetError, ParameterError
from ._args import input_file, say
from .run import add_run_options, run_params_from_args


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch",
        help="run the whole pipeline on many tomograms (a folder, a RELION 5 tomograms.star, a copick project) on Dask",
        description=(
            "Classify the particles of every tomogram of a data set: DATASET is a folder of .mrc/.rec tomograms, a "
            "RELION 5 tomograms.star or a copick config (.json). One source model is simulated and trained per "
            "imaging condition (voxel size, microscope) and shared; then each tomogram is a Dask task running the "
            "'run' pipeline (pick → adapt → predict → map). Writes OUTDIR/tomograms/<name>/ (the 'run' outputs), "
            "OUTDIR/particles.star (RELION 5, all tomograms, rlnTomoName), tomograms.star, class_counts.csv, "
            "sources/<condition>/model.pt and batch_report.json. A failing tomogram is recorded and the batch "
            "goes on; rerunning skips the complete ones."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="folder of MRCs, a RELION 5 tomograms.star, or a copick config .json")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                   help="output folder (created if missing; an earlier batch's folder is resumed)")
    add_run_options(p)
    for action in p._actions:  # in a batch every worker is one process with one torch thread unless told
        if action.dest == "threads":
            action.help = "CPU threads for torch in each worker (default 1: one single-threaded worker per core)"
    g = p.add_argument_group("source model and adaptation")
    g.add_argument("--model", default=None, metavar="MODEL.pt",
                   help="use this source model (from 'train') for every tomogram instead of simulating one per "
                        "condition; needs --source-set")
    g.add_argument("--source-set", default=None, metavar="SOURCE.npz", dest="source_set",
                   help="the simulated set MODEL.pt was trained on (adaptation needs it)")
    g.add_argument("--joint", action="store_true",
                   help="one adaptation per imaging condition to the pooled picks of all its tomograms (capped at "
                        "the adaptation's max target picks, a seeded subset), then every tomogram is predicted with "
                        "that one adapted model (saved as sources/<condition>/adapted_joint.pt); default: each "
                        "tomogram is adapted on its own")
    g = p.add_argument_group("cluster (Dask)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster worker processes (default: one per CPU core), each single-threaded")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use the Dask scheduler at ADDRESS (e.g. tcp://host:8786) instead of a LocalCluster")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="Dask retries of a task that raised an unexpected error or whose worker died (default 2)")
    g.add_argument("--slurm-jobs", type=int, default=None, metavar="N",
                   help="run on Slurm through dask-jobqueue with N jobs (see --slurm-*)")
    g.add_argument("--slurm-cores", type=int, default=4, metavar="N", help="cores (= workers) per Slurm job (default 4)")
    g.add_argument("--slurm-memory", default="16GB", metavar="MEM", help="memory per Slurm job (default 16GB)")
    g.add_argument("--slurm-walltime", default="02:00:00", metavar="HH:MM:SS", help="wall time per job (default 02:00:00)")
    g.add_argument("--slurm-queue", default=None, metavar="PARTITION", help="Slurm partition")
    g.add_argument("--slurm-account", default=None, metavar="ACCOUNT", help="Slurm account")
    g.add_argument("--slurm-print-script", action="store_true",
                   help="print the Slurm job script dask-jobqueue would submit, and exit (needs no Slurm)")
    g = p.add_argument_group("data set and exports")
    g.add_argument("--picks-dir", default=None, metavar="DIR", dest="picks_dir",
                   help="classify given picks instead of DoG picking: DIR/<tomogram name>.star (or .csv), in voxels "
                        "of that tomogram; tomograms without a file there are picked as usual")
    g.add_argument("--copick-voxel-size", type=float, default=None, metavar="Å",
                   help="copick: the voxel spacing of the tomograms (default: the smallest with a tomogram)")
    g.add_argument("--copick-tomo-type", default=None, metavar="TYPE", help="copick: tomogram type (e.g. wbp)")
    g.add_argument("--warp", action="store_true", help="also write OUTDIR/particles_warp.star (Warp/M variant)")
    g.add_argument("--copick-write", action="store_true",
                   help="copick data set: write the classified picks back into the project (one object per class)")
    p.set_defaults(func=cmd_batch)
    return p


def _slurm_options(args) -> dict:
    return {"jobs": args.slurm_jobs or 1, "cores": args.slurm_cores, "memory": args.slurm_memory,
            "walltime": args.slurm_walltime, "queue": args.slurm_queue, "account": args.slurm_account}


def _check_output(out: Path) -> None:
    """OUTDIR: new, empty, or an earlier batch's (resumed); never a folder of other files; writable."""
    from ..batch import REPORT, SOURCES_DIR, TOMOGRAMS_DIR
    from ._outputs import writable_folder

    if out.exists() and not out.is_dir():
        raise CryoOpensetError(f"-o '{out}' is a file; give a folder for the batch's outputs")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise CryoOpensetError(f"-o '{out}': the folder '{out.parent}' does not exist")
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        ours = {TOMOGRAMS_DIR, SOURCES_DIR, REPORT, "particles.star", "tomograms.star", "class_counts.csv",
                "particles_warp.star"}
        foreign = sorted(n for n in names - ours if not n.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:4]) + (", …" if len(foreign) > 4 else "")
            raise CryoOpensetError(f"-o '{out}' holds files that are not a batch's ({shown}); choose a new folder")
        writable_folder(out, "-o", out)
    else:
        writable_folder(parent, "-o", out)


def cmd_batch(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.slurm_print_script:
        from ..batch import slurm_job_script

        print(slurm_job_script(**_slurm_options(args)))
        return 0
    t0 = time.perf_counter()
    if args.workers is not None and args.workers < 1:
        raise ParameterError(f"--workers must be ≥ 1, got {args.workers}")
    if args.retries < 0:
        raise ParameterError(f"--retries must be ≥ 0, got {args.retries}")
    if sum(x is not None for x in (args.scheduler, args.slurm_jobs)) + (args.workers is not None) > 1:
        raise ParameterError("give one of --workers (LocalCluster), --scheduler ADDRESS or --slurm-jobs N")
    if (args.model is None) != (args.source_set is None):
        raise ParameterError("--model and --source-set go together: the model, and the simulated set it was trained on")
    out = Path(args.output)
    _check_output(out)
    params = run_params_from_args(args)
    if params.threads is None:
        params = replace(params, threads=1)  # one torch thread per single-threaded worker
    from ..batch import ClusterSpec, attach_picks, discover, group_by_condition, make_client, run_batch, trained_from_model
    from ..simulate.templates import load_templates

    kind, items = discover(args.dataset, voxel_size=args.copick_voxel_size, tomo_type=args.copick_tomo_type)
    if args.picks_dir:
        items = attach_picks(items, args.picks_dir)
        say(f"batch: given picks for {sum(i.picks is not None for i in items)} of {len(items)} tomogram(s) "
            f"from {args.picks_dir}")
    groups = group_by_condition(items)
    n_bad = sum(i.error is not None for i in items)
    say(f"batch: {len(items)} tomograms in {args.dataset} ({kind}); {len(groups)} imaging condition(s): "
        + (", ".join(f"{k} ×{len(v)}" for k, v in groups.items()) or "none readable")
        + (f"; {n_bad} unreadable" if n_bad else ""))
    if args.copick_write and kind != "copick":
        raise ParameterError("--copick-write needs a copick config as DATASET")
    cache: dict[float, list] = {}

    def templates_for(voxel_size: float) -> list:
        key = round(float(voxel_size), 6)
        if key not in cache:
            cache[key] = load_templates(args.templates, float(voxel_size))
        return cache[key]

    for key, group in groups.items():  # templates that cannot be read fail now, before any cluster starts
        names = ", ".join(t.name for t in templates_for(group[0].voxel_size))
        say(f"batch: condition {key}: templates {names}")
    model = None
    if args.model is not None:
        model_path = input_file(args.model, "--model", "a model bundle (.pt) written by 'train'")
        source_path = input_file(args.source_set, "--source-set", "a simulated set (.npz) written by 'simulate'")
        from ._args import load_model, simulated_set

        load_model(model_path)
        simulated_set(source_path, "--source-set")
        try:
            model = trained_from_model(model_path, source_path)
        except ParameterError as exc:
            raise ParameterError(f"--source-set '{source_path}' does not fit --model '{model_path}': {exc}") from None
    spec = ClusterSpec(n_workers=args.workers, scheduler=args.scheduler,
                       slurm=_slurm_options(args) if args.slurm_jobs else None, device=params.device)
    client, cluster = make_client(spec)
    try:
        say(f"batch: Dask dashboard: {client.dashboard_link}")
        info = client.scheduler_info()
        say(f"batch: {len(info.get('workers', {}))} worker(s) at {client.scheduler.address}")
        from ._args import given
        from .run import _IMAGING

        result = run_batch(items, templates_for, params, out, client=client, model=model, retries=args.retries,
                           say=say, dataset=str(args.dataset), told=set(given(args, _IMAGING)), joint=args.joint)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    _exports(args, kind, out, items)
    c = result.counts()
    summary = ", ".join(f"{k} {v}" for k, v in c.items())
    say(f"batch: {summary}; {time.perf_counter() - t0:.1f} s in all → {out}/ (particles.star, batch_report.json)")
    return 0


def _exports(args, kind: str, out: Path, items) -> None:
    """``--warp`` and ``--copick-write``: the combined predictions in those formats too."""
    if not (args.warp or args.copick_write) or not (out / "particles.star").exists():
        return
    from ..io.relion5 import read_relion5_particles, read_tomograms_star

    tomos = read_tomograms_star(out / "tomograms.star", check_files=False)
    tables = read_relion5_particles(out / "particles.star", tomos)
    if args.warp:
        from ..io.warp import write_warp_star

        write_warp_star(out / "particles_warp.star", list(tables.items()))
        say(f"batch: Warp/M particles → {out / 'particles_warp.star'}")
    if args.copick_write:
        from ..io import copick_io

        by_name = {i.name: i for i in items}
        config = Path(next(iter(by_name.values())).copick[0])
        root = copick_io.open_project(config)
        for name, picks in tables.items():
            counts = copick_io.write_copick_picks(root, name, picks, float(by_name[name].copick[2]), config_path=config)
            say(f"batch: copick run {name}: {', '.join(f'{k} {v}' for k, v in counts.items())}")
