"""Physics simulator: templates → tilt series → CTF × MTF → noise → reconstruction (no Qt/napari).

Modules (each one job):

- :mod:`.templates` — :class:`Template`, MRC maps / atomic models / folders / built-in library,
  resampling; :mod:`.atomic` — PDB/mmCIF → density with gemmi;
- :mod:`.decoys` — procedural pseudo-macromolecules for the ``unknown`` class;
- :class:`ImagingCondition` (units, SNR definition) — in :mod:`napari_cryo_openset.params.simulation`;
- :mod:`.placement` — uniform random rotations, placing rotated templates in boxes;
- :mod:`.projector` — tilt-series projection / weighted back-projection (sparse matrices);
- :mod:`.imaging` — the chain (full and *approximate* 3D mode), contrast sign;
- :mod:`.datasets` — labelled subtomogram sets: parameters, classes, the ``.npz`` file;
- :mod:`.generate` — simulating such a set (seeded sample specs, batched rendering);
- :mod:`.scenes` — whole synthetic tomograms with ground-truth picks; the sample scene;
- :mod:`.scene_source` — a source set made as the target is picked (crowded scenes → DoG picks → boxes).

The ``simulate`` subcommand is :mod:`napari_cryo_openset.cli.simulate`.

Conventions: arrays (Z, Y, X); Å, µm (defocus, underfocus positive), degrees; tilt axis Y;
simulated reconstructions are in the raw convention (**protein dark**); SNR =
var(signal)/var(noise) per projection; class names = sorted template names, then ``empty``,
then ``unknown``. Names are imported lazily so that ``import napari_cryo_openset.simulate``
does not load torch or gemmi until something is used.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Template": "templates",
    "TemplateError": "templates",
    "load_template": "templates",
    "load_templates": "templates",
    "builtin_templates": "templates",
    "builtin_template_names": "templates",
    "resample_density": "templates",
    "density_from_atoms": "atomic",
    "DecoyParams": "decoys",
    "make_decoy": "decoys",
    "make_decoys": "decoys",
    "ImagingCondition": "datasets",
    "random_rotations": "placement",
    "rotate_into_boxes": "placement",
    "TiltProjector": "projector",
    "TiltSeries": "imaging",
    "image_volumes": "imaging",
    "approximate_image_volumes": "imaging",
    "wedge_mask": "imaging",
    "DatasetParams": "datasets",
    "SimulatedSet": "datasets",
    "class_names_for": "datasets",
    "generate_subtomograms": "generate",
    "generate_dataset": "generate",
    "write_dataset": "datasets",
    "load_dataset": "datasets",
    "EMPTY_CLASS": "datasets",
    "SceneParams": "scenes",
    "SAMPLE_SCENE": "scenes",
    "make_scene": "scenes",
    "generate_scene": "scenes",
    "generate_scene_source": "scene_source",
    "sample_scene": "scenes",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
