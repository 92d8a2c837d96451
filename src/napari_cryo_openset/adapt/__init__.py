"""On-the-fly domain adaptation: 3D-ADA (:mod:`.ada`), MLUDA (:mod:`.mluda`), losses (:mod:`.losses`).

No Qt or napari imports. Torch is imported by the submodules only.
"""
