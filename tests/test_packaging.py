"""The plugin is installable and discoverable: npe2 manifest (editable and wheel), console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def _run(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


def test_npe2_validate():
    result = _run(str(BIN / "npe2"), "validate", "napari-cryo-openset")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_npe2_list_shows_plugin():
    result = _run(str(BIN / "npe2"), "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "napari-cryo-openset" in result.stdout


def test_single_manifest():
    """The package's napari.yaml *is* the top-level one (a link, not a second copy)."""
    import napari_cryo_openset

    packaged = Path(napari_cryo_openset.__file__).parent / "napari.yaml"
    assert packaged.resolve() == (REPO / "napari.yaml").resolve()


def test_manifest_contributions():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-cryo-openset")
    patterns = set(manifest.contributions.readers[0].filename_patterns)
    assert {"*.mrc", "*.rec", "*.map", "*.st", "*.star", "*.csv"} <= patterns
    assert {w.layer_types[0] for w in manifest.contributions.writers} == {"points", "image"}
    assert manifest.contributions.sample_data


@pytest.mark.skipif(shutil.which("git") is None, reason="git not available")
def test_wheel_contains_manifest(tmp_path):
    """Build a wheel (no network: setuptools from this environment) and check the manifest."""
    result = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(tmp_path), str(REPO),
    )
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip("setuptools/wheel not installed in this environment")
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("napari_cryo_openset-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_cryo_openset/napari.yaml" in names
        assert zf.read("napari_cryo_openset/napari.yaml") == (REPO / "napari.yaml").read_bytes()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-cryo-openset = napari_cryo_openset:napari.yaml" in entry_points
    assert "napari-cryo-openset = napari_cryo_openset.cli:main" in entry_points
    # the manifest inside the wheel validates on its own
    extracted = tmp_path / "napari.yaml"
    with zipfile.ZipFile(wheel) as zf:
        extracted.write_bytes(zf.read("napari_cryo_openset/napari.yaml"))
    result = _run(str(BIN / "npe2"), "validate", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_no_qt_or_napari():
    code = (
        "import sys; import napari_cryo_openset.io, napari_cryo_openset.picks, "
        "napari_cryo_openset.layers, napari_cryo_openset.synthetic, napari_cryo_openset.palette, "
        "napari_cryo_openset.workflow, napari_cryo_openset.thumbnails, napari_cryo_openset.session;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('napari','qtpy','PyQt6','PyQt5','torch')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr
