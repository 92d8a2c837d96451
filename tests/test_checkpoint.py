"""Model bundles: round trip, plain contents, refusing code, versions, damaged files, compatibility."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from napari_cryo_openset.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    BundleError,
    ModelBundle,
    bundle_from_training,
    check_compatible,
    load_bundle,
    read_bundle_dict,
    save_bundle,
    to_dict,
)
from napari_cryo_openset.errors import CryoOpensetError
from napari_cryo_openset.models import (
    REFERENCE_ARCHITECTURE,
    DomainDiscriminator,
    NetworkParams,
    build_encoder,
    build_model,
)
from napari_cryo_openset.simulate import ImagingCondition
from napari_cryo_openset.train import infer, source_boxes

BOX = 24


@pytest.fixture(scope="module")
def small_set(builtin, simulate):
    return simulate(builtin(("2cg9", "3j9i")), box=BOX, per_class=8, empty=8, seed=1, mode="approximate",
                    condition=ImagingCondition(voxel_size=10.0, snr=3.0))


@pytest.fixture(scope="module")
def trained(small_set, train):
    return train(small_set, epochs=2, batch_size=8, width=4, embedding_dim=16, seed=0)


@pytest.fixture(scope="module")
def boxes(small_set):
    return source_boxes(small_set.subtomograms, small_set.polarity)


@pytest.fixture
def bundle(trained):
    return bundle_from_training(trained, target_tomogram=None)


@pytest.fixture
def saved(bundle, tmp_path):
    return save_bundle(bundle, tmp_path / "model.pt")


# ----------------------------------------------------------------------------- round trip
def test_save_load_gives_identical_predictions(bundle, saved, boxes):
    before_logits, before_feats = infer(bundle.model, boxes)
    loaded = load_bundle(saved)
    after_logits, after_feats = infer(loaded.model, boxes)
    assert torch.equal(before_logits, after_logits)
    assert torch.equal(before_feats, after_feats)
    assert not loaded.model.training
    assert loaded.class_names == ["2cg9", "3j9i", "empty"]
    assert loaded.box_size == BOX and loaded.voxel_size == 10.0
    assert loaded.network == bundle.network
    assert loaded.history == bundle.history
    assert loaded.provenance["seed"] == 0
    assert loaded.provenance["training"]["epochs"] == 2
    assert loaded.provenance["simulation"]["counts"] == {"2cg9": 8, "3j9i": 8, "empty": 8}
    assert loaded.provenance["package_version"]
    assert loaded.openset["method"] == "softmax"
    assert loaded.known_classes == loaded.class_names
    assert "box 24³ at 10 Å" in loaded.describe()


def _walk(value, where="bundle"):
    allowed = (dict, list, str, int, float, bool, type(None), torch.Tensor)
    assert type(value) in allowed, f"{where} is a {type(value).__name__}"
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str, f"{where} has a {type(k).__name__} key"
            _walk(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{where}[{i}]")


def test_bundle_file_holds_only_plain_types(saved):
    data = torch.load(saved, map_location="cpu", weights_only=True)
    _walk(data)
    assert data["format"] == FORMAT and data["format_version"] == FORMAT_VERSION
    for key in ("class_names", "box_size", "voxel_size", "normalisation", "architecture", "state_dicts",
                "openset", "provenance", "history"):
        assert key in data
    assert set(data["state_dicts"]) == {"encoder", "classifier"}
    prov = data["provenance"]
    for key in ("simulation", "training", "seed", "package_version", "torch_version", "date"):
        assert key in prov
    assert read_bundle_dict(saved)["class_names"] == data["class_names"]


def test_save_is_atomic_and_needs_an_existing_folder(bundle, tmp_path):
    path = save_bundle(bundle, tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    save_bundle(bundle, path)  # overwriting works
    with pytest.raises(BundleError, match="does not exist"):
        save_bundle(bundle, tmp_path / "missing" / "m.pt")


def test_to_dict_converts_numpy_and_refuses_objects(bundle):
    bundle.openset = {"method": "centre", "threshold": np.float32(1.5), "centres": np.ones((3, 16), np.float32),
                      "centre_classes": ("2cg9", "3j9i", "empty"), "n": np.int64(3)}
    data = to_dict(bundle)
    _walk(data)
    assert isinstance(data["openset"]["centres"], torch.Tensor)
    assert data["openset"]["threshold"] == 1.5 and data["openset"]["n"] == 3
    assert data["openset"]["centre_classes"] == ["2cg9", "3j9i", "empty"]
    bundle.provenance = {"oops": object()}
    with pytest.raises(TypeError, match=r"provenance\.oops"):
        to_dict(bundle)


def test_adapted_bundle_round_trip(tmp_path):
    """Target encoder, source encoder, discriminator and class centres all survive."""
    torch.manual_seed(0)
    net = NetworkParams(box=BOX, num_classes=3, embedding_dim=8, width=2)
    model = build_model(net).eval()
    source = build_encoder(net).eval()
    disc = DomainDiscriminator(8, hidden=12).eval()
    centres = torch.randn(3, 8)
    bundle = ModelBundle(model=model, class_names=["a", "b", "unknown"], box_size=BOX, voxel_size=12.5,
                         openset={"method": "centre", "threshold": 2.0, "centres": centres,
                                  "centre_classes": ["a", "b"]},
                         provenance={"adaptation": {"method": "mluda"}, "target_tomogram": "/x/t.mrc"},
                         source_encoder=source, discriminator=disc)
    loaded = load_bundle(save_bundle(bundle, tmp_path / "adapted.pt"))
    x = torch.randn(2, 1, BOX, BOX, BOX, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
        assert torch.equal(loaded.source_encoder(x), source(x))
        h = torch.randn(4, 8)
        assert torch.equal(loaded.discriminator(h), disc(h))
    assert loaded.discriminator.net[0].out_features == 12
    assert torch.equal(loaded.openset["centres"], centres)
    assert loaded.known_classes == ["a", "b"]
    assert loaded.provenance["target_tomogram"] == "/x/t.mrc"


def test_reference_architecture_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(NetworkParams(architecture=REFERENCE_ARCHITECTURE, box=BOX, num_classes=2)).eval()
    bundle = ModelBundle(model=model, class_names=["a", "b"], box_size=BOX, voxel_size=10.0)
    loaded = load_bundle(save_bundle(bundle, tmp_path / "ref.pt"))
    assert loaded.network.architecture == REFERENCE_ARCHITECTURE and loaded.network.embedding_dim == 500
    x = torch.randn(1, 1, BOX, BOX, BOX, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


# --------------------------------------------------------------------------- refusing code
class _RunsCode:
    """Unpickling this would call os.system (creating a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _CustomObject:
    def __init__(self):
        self.value = 1


def test_crafted_pickle_payload_is_refused_and_never_runs(saved, tmp_path):
    marker = tmp_path / "payload_ran"
    data = torch.load(saved, weights_only=True)
    data["provenance"]["evil"] = _RunsCode(marker)  # a real bundle with one booby-trapped field
    evil = tmp_path / "evil.pt"
    torch.save(data, evil)
    with pytest.raises(BundleError, match=r"refused.*could run code \((posix|nt)\.system\)") as info:
        load_bundle(evil)
    assert "evil.pt" in str(info.value) and "not loaded" in str(info.value)
    assert not marker.exists()
    # the payload is real: unpickling it without weights_only would have run it
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_RunsCode(proof)))
    assert proof.exists()
    # also a plain pickle file (not a torch zip archive)
    raw = tmp_path / "raw.pt"
    with open(raw, "wb") as fh:
        pickle.dump({"format": FORMAT, "x": _RunsCode(marker)}, fh, protocol=2)
    with pytest.raises(BundleError, match="raw.pt"):
        load_bundle(raw)
    assert not marker.exists()


def test_custom_class_is_refused_with_its_name(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"format": FORMAT, "format_version": 1, "x": _CustomObject()}, path)
    with pytest.raises(BundleError, match=r"refused.*_CustomObject"):
        load_bundle(path)


# ------------------------------------------------------------------- versions and damage
def test_newer_format_version_asks_to_update(saved, tmp_path):
    data = torch.load(saved, weights_only=True)
    data["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(data, newer)
    with pytest.raises(BundleError, match=rf"newer.pt.*format version {FORMAT_VERSION + 1}.*update"):
        load_bundle(newer)
    data["format_version"] = 0
    torch.save(data, newer)
    with pytest.raises(BundleError, match="old format version 0"):
        load_bundle(newer)
    data["format_version"] = "1"
    torch.save(data, newer)
    with pytest.raises(BundleError, match="format_version"):
        load_bundle(newer)


@pytest.mark.parametrize("content", [
    os.urandom(2048),
    b"",
    b"data_\nloop_\n_rlnCoordinateX #1\n1.0\n",
    b"\x89HDF\r\n\x1a\n" + b"\x00" * 100,
])
def test_non_torch_files_are_a_clear_error(tmp_path, content):
    path = tmp_path / "not_a_model.pt"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=r"not_a_model\.pt.*not a napari-cryo-openset model bundle"):
        load_bundle(path)


def test_torch_file_of_something_else(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, path)
    with pytest.raises(BundleError, match="no 'napari-cryo-openset model' marker"):
        load_bundle(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(BundleError, match="not a napari-cryo-openset model bundle"):
        load_bundle(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BundleError, match=r"'.*nowhere\.pt' does not exist"):
        load_bundle(tmp_path / "nowhere.pt")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path)  # a folder is not a model file


def test_damaged_bundle(saved, tmp_path):
    data = torch.load(saved, weights_only=True)
    damaged = tmp_path / "damaged.pt"
    broken = {**data, "state_dicts": {"classifier": data["state_dicts"]["classifier"]}}
    torch.save(broken, damaged)
    with pytest.raises(BundleError, match="damaged or incomplete"):
        load_bundle(damaged)
    wrong = {**data, "class_names": ["only", "two"]}
    torch.save(wrong, damaged)
    with pytest.raises(BundleError, match="2 class names for 3 outputs"):
        load_bundle(damaged)
    shapes = {**data, "architecture": {"name": "fast", "params": {**data["architecture"]["params"], "width": 8}}}
    torch.save(shapes, damaged)
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(damaged)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(BundleError, match="truncated.pt"):
        load_bundle(truncated)


# --------------------------------------------------------------------------- compatibility
def test_check_compatible(bundle):
    assert check_compatible(bundle) is False
    assert check_compatible(bundle, box=BOX, voxel_size=10.0) is False
    assert check_compatible(bundle, voxel_size=(10.1, 10.0, 9.95)) is False  # within 2 %
    with pytest.raises(BundleError, match=r"my boxes has 32³ boxes but the model expects 24³"):
        check_compatible(bundle, box=32, source="my boxes")
    assert check_compatible(bundle, voxel_size=13.5) is True  # resampled
    assert check_compatible(bundle, voxel_size=(13.5, 13.5, 13.5)) is True
    with pytest.raises(BundleError, match=r"13.5 Å voxels but the model was trained at 10 Å"):
        check_compatible(bundle, voxel_size=13.5, allow_resampling=False)
    for bad in (0.0, -1.0, float("nan"), (10.0, 0.0, 10.0)):
        with pytest.raises(BundleError, match="no valid voxel size"):
            check_compatible(bundle, voxel_size=bad)
    assert issubclass(BundleError, CryoOpensetError)
