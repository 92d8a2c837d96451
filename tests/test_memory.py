"""Opening a large tomogram is memory-mapped: a 1.5 GB file and a 64³ crop cost < 200 MB RSS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

SHAPE = (375, 1024, 1024)  # float32: 1.57 GB


def test_open_large_tomogram_and_crop_peak_rss(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    if free < 3 * 1024**3:
        pytest.skip(f"needs ~1.6 GB of free disk in {tmp_path}, {free / 1024**3:.1f} GB free")
    path = tmp_path / "large.mrc"
    # Measure in a fresh interpreter so that nothing else inflates the peak.
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        import numpy as np, mrcfile
        with mrcfile.new_mmap({str(path)!r}, shape={SHAPE}, mrc_mode=2, overwrite=True) as mrc:
            mrc.voxel_size = 5.0
            mrc.data[187, 500:564, 500:564] = 1.0
        del mrc
        from napari_cryo_openset.io import read_tomogram
        import gc; gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB
        tomo = read_tomogram({str(path)!r})
        crop = np.array(tomo.data[160:224, 500:564, 500:564])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(dict(before=before, after=after, size_gb=tomo.data.nbytes / 1e9,
                              crop_sum=float(crop.sum()), shape=list(tomo.shape))))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"peak RSS increase: {report['after'] - report['before']:.1f} MB for a {report['size_gb']:.2f} GB file")
    assert report["shape"] == list(SHAPE)
    assert report["size_gb"] > 1.5
    assert report["crop_sum"] == 64 * 64  # the crop holds the values written at that place
    assert report["after"] - report["before"] < 200
