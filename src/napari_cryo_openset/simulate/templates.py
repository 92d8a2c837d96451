"""Templates: the density maps the simulator images (MRC maps, atomic models, built-in library).

A :class:`Template` is a density cube (Z, Y, X), float32, **protein positive, background 0**, at
a known voxel size (Å), with its centre of mass within half a voxel of voxel ``n // 2`` (the
particle centre used for placement and for ground-truth picks). Every template is normalised
so that the **mean density inside its support is 1** (the support is the voxels above half the
99th percentile of the positive density, i.e. the half-maximum contour of the blurred
molecule). Proteins all have about the same density, so this makes templates, decoys and
neighbours comparable; the absolute scale of the simulated image is then set by the SNR.

``radius`` (Å) is the largest distance from the centre of mass to a support voxel.

Loading (:func:`load_template`, :func:`load_templates`):

- MRC/CCP4 maps at any voxel size (from the header, or ``source_voxel_size``): the median of
  the outer shell is subtracted as background, negatives are clipped, a map whose strongest
  values are negative is flipped (with a warning), the map is resampled to the target voxel
  size (:func:`resample_density`), re-centred on its centre of mass and cropped to its
  support plus a margin.
- PDB/mmCIF models through gemmi (:mod:`.atomic`).
- Directories: every map/model inside (not recursive), names sorted.
- The word ``builtin``: the library shipped in ``napari_cryo_openset/data/templates``.

The name is the file stem (``4v4r.mrc`` → ``4v4r``); ``unknown`` and ``empty`` are reserved
for the open-set and empty classes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CryoOpensetError, ParameterError
from .atomic import ATOMIC_SUFFIXES, density_from_atoms, is_atomic_model

MAP_SUFFIXES = (".mrc", ".map", ".ccp4", ".mrcs", ".rec")
RESERVED_NAMES = ("unknown", "empty")
BUILTIN = "builtin"
_BUILTIN_FILE = "builtin_templates.npz"
#: Support threshold: this fraction of the 99th percentile of the positive density.
SUPPORT_FRACTION = 0.5
#: Gain of the Gaussian anti-alias filter at the new Nyquist frequency when coarsening a map.
ANTI_ALIAS_GAIN = 0.7
#: Voxels kept beyond the faintest density (> 1 % of the maximum) when cropping.
CROP_MARGIN = 2


class TemplateError(CryoOpensetError):
    """A template file is missing, unreadable or unusable."""


@dataclass(frozen=True, eq=False)
class Template:
    """A density template at a given voxel size.

    Attributes
    ----------
    name
        Class name (file stem by default).
    voxel_size
        Å per voxel.
    density
        (Z, Y, X) float32 cube, protein positive, background 0, mean inside the support = 1,
        centre of mass at voxel ``n // 2`` (± 0.5).
    radius
        Å, largest distance from the centre of mass to a support voxel.
    source
        Where it came from (a path, ``builtin`` or ``decoy``).
    """

    name: str
    voxel_size: float
    density: np.ndarray = field(repr=False)
    radius: float = 0.0
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.density.shape)  # type: ignore[return-value]

    @property
    def diameter(self) -> float:
        """Å, twice :attr:`radius`."""
        return 2.0 * self.radius

    @property
    def radius_voxels(self) -> float:
        return self.radius / self.voxel_size

    @classmethod
    def from_density(
        cls,
        name: str,
        density: np.ndarray,
        voxel_size: float,
        source: str = "",
        *,
        recentre: bool = True,
    ) -> Template:
        """Clean, centre, crop and normalise a density (already at ``voxel_size``)."""
        dens = prepare_density(density, recentre=recentre, what=name)
        return cls(name=name, voxel_size=float(voxel_size), density=dens,
                   radius=support_radius(dens, voxel_size), source=source)

    def at_voxel_size(self, voxel_size: float) -> Template:
        """This template resampled to another voxel size (itself if equal)."""
        if np.isclose(voxel_size, self.voxel_size, rtol=1e-6):
            return self
        dens = resample_density(self.density, self.voxel_size, voxel_size)
        return Template.from_density(self.name, dens, voxel_size, self.source)


# --------------------------------------------------------------------------------------------
# density measures
# --------------------------------------------------------------------------------------------


def support_threshold(density: np.ndarray) -> float:
    """Half the 99th percentile of the positive voxels (the molecule's half-maximum contour)."""
    pos = density[density > 0]
    if pos.size == 0:
        return 0.0
    return SUPPORT_FRACTION * float(np.percentile(pos, 99))


def support_mask(density: np.ndarray) -> np.ndarray:
    t = support_threshold(density)
    return density > t if t > 0 else np.zeros(density.shape, bool)


def centre_of_mass(density: np.ndarray) -> np.ndarray:
    """(3,) Z Y X voxel coordinates of the centre of mass of the positive density."""
    w = np.clip(density, 0, None).astype(np.float64)
    total = w.sum()
    if total <= 0:
        return (np.asarray(density.shape, float) - 1) / 2
    return np.array([(w.sum(axis=tuple(j for j in range(3) if j != i)) * np.arange(density.shape[i])).sum() / total
                     for i in range(3)])


def support_radius(density: np.ndarray, voxel_size: float) -> float:
    """Å: the largest distance from the centre of mass to a support voxel (0 if empty)."""
    mask = support_mask(density)
    if not mask.any():
        return 0.0
    com = centre_of_mass(density)
    idx = np.argwhere(mask)
    return float(np.sqrt(((idx - com) ** 2).sum(1)).max() * voxel_size)


# --------------------------------------------------------------------------------------------
# cleaning, centring, resampling
# --------------------------------------------------------------------------------------------


def prepare_density(density: np.ndarray, *, recentre: bool = True, what: str = "template") -> np.ndarray:
    """Background → 0, protein positive, centred on the centre of mass, cropped, normalised.

    Returns an odd cube (Z, Y, X) float32 whose centre of mass lies within half a voxel of
    voxel ``n // 2`` and whose mean density inside the support is 1.
    """
    d = np.asarray(density, dtype=np.float32)
    if d.ndim != 3 or min(d.shape) < 3:
        raise TemplateError(f"{what}: a template must be a 3D map of at least 3³ voxels, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise TemplateError(f"{what}: the map contains NaN or infinite values")
    shell = np.concatenate([d[[0, -1]].ravel(), d[:, [0, -1]].ravel(), d[:, :, [0, -1]].ravel()])
    d = d - np.float32(np.median(shell))
    lo, hi = np.percentile(d, [0.05, 99.95])
    if -lo > hi:
        warnings.warn(f"{what}: the strongest values are negative; the map was inverted so that protein is positive",
                      stacklevel=3)
        d = -d
    d = np.clip(d, 0, None)
    if not (d > 0).any():
        raise TemplateError(f"{what}: the map has no density above its background")
    if recentre:
        d = _centre_and_crop(d)
    inside = d[support_mask(d)]
    scale = float(inside.mean()) if inside.size else float(d.max())
    return np.ascontiguousarray(d / np.float32(scale), dtype=np.float32)


def _centre_and_crop(d: np.ndarray) -> np.ndarray:
    com = np.round(centre_of_mass(d)).astype(int)
    faint = np.argwhere(d > 0.01 * d.max())
    half = int(np.ceil(np.sqrt(((faint - com) ** 2).sum(1)).max())) + CROP_MARGIN
    n = 2 * half + 1
    out = np.zeros((n, n, n), dtype=np.float32)
    src, dst = [], []
    for axis in range(3):
        start = com[axis] - half
        s0, s1 = max(0, start), min(d.shape[axis], start + n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - start, s1 - start))
    out[tuple(dst)] = d[tuple(src)]
    return out


def resample_density(density: np.ndarray, voxel_in: float, voxel_out: float) -> np.ndarray:
    """Resample a (Z, Y, X) map from ``voxel_in`` to ``voxel_out`` Å, keeping physical positions.

    Method (documented interpolation): when coarsening, the map is first low-passed in Fourier
    space with a Gaussian whose gain is 0.7 at the new Nyquist frequency (``ANTI_ALIAS_GAIN``;
    it damps what would alias, without the ringing of a sharp cut-off that clipping negatives
    would turn into a larger radius of gyration); it is then sampled with cubic B-splines
    (``scipy.ndimage.map_coordinates``, order 3, zeros outside) at the new voxel centres. Voxel
    ``n // 2`` of the input and voxel ``m // 2`` of the output are the same physical point, so
    the centre of mass, the radius of gyration (to ~1 %) and the radius are preserved. Density
    *values* are kept (not the sum), as for any density map.
    """
    from scipy import ndimage

    d = np.asarray(density, dtype=np.float64)
    ratio = float(voxel_in) / float(voxel_out)
    if ratio < 1.0:  # coarser output: band-limit first
        f = np.fft.rfftn(d, axes=(0, 1, 2))
        freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in d.shape[:2]], np.fft.rfftfreq(d.shape[2]), indexing="ij")
        r = np.sqrt(sum(q**2 for q in freqs)) / (0.5 * ratio)  # in units of the new Nyquist
        d = np.fft.irfftn(f * ANTI_ALIAS_GAIN ** (r**2), s=d.shape, axes=(0, 1, 2))
    out_shape = tuple(max(3, int(round(n * ratio))) for n in d.shape)
    coords = [(np.arange(m) - m // 2) / ratio + n // 2 for m, n in zip(out_shape, d.shape)]
    grid = np.meshgrid(*coords, indexing="ij")
    out = ndimage.map_coordinates(d, grid, order=3, mode="constant", cval=0.0, prefilter=True)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _check_voxel_size(voxel_size: float) -> float:
    try:
        vs = float(voxel_size)
    except (TypeError, ValueError):
        raise ParameterError(f"voxel_size must be a positive number of Å, got {voxel_size!r}") from None
    if not np.isfinite(vs) or vs <= 0:
        raise ParameterError(f"voxel_size must be a positive number of Å, got {voxel_size!r}")
    return vs


def read_map(path: str | os.PathLike, source_voxel_size: float | None = None) -> tuple[np.ndarray, float]:
    """Read an MRC/CCP4 density map: (Z, Y, X) float32 array and its voxel size in Å."""
    import mrcfile

    from ..errors import TomogramError
    from ..io.tomogram import check_mrc_file

    path = Path(path)
    try:  # the header first: a permissive open trusts garbage sizes (a text file → gigabytes)
        check_mrc_file(path)
    except TomogramError as exc:
        raise TemplateError(f"template {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True, mode="r") as mrc:
                if mrc.data is None:
                    raise ValueError("no data block")
                data = np.asarray(mrc.data, dtype=np.float32)
                vs = float(mrc.voxel_size.x)
    except (OSError, ValueError) as exc:
        raise TemplateError(f"template '{path}' is not a readable MRC map ({exc})") from None
    if data.ndim != 3:
        raise TemplateError(f"template '{path}' must be a 3D map, got shape {data.shape}")
    if source_voxel_size is not None:
        vs = _check_voxel_size(source_voxel_size)
    elif not vs > 0:
        raise TemplateError(
            f"template '{path}' has no voxel size in its header; give its voxel size (source_voxel_size)"
        )
    return data, vs


def load_template(
    path: str | os.PathLike,
    voxel_size: float,
    name: str | None = None,
    *,
    source_voxel_size: float | None = None,
) -> Template:
    """Load one template (MRC map or PDB/mmCIF model) at ``voxel_size`` Å.

    ``name`` defaults to the file stem (``.cif.gz`` and friends stripped). Raises
    :class:`TemplateError` naming the file when it is missing or unreadable.
    """
    vs = _check_voxel_size(voxel_size)
    path = Path(path)
    if not path.exists():
        raise TemplateError(f"template '{path}' does not exist")
    if not path.is_file():
        raise TemplateError(f"template '{path}' is not a file")
    name = name or _stem(path)
    _check_name(name, path)
    if is_atomic_model(path):
        try:
            density = density_from_atoms(path, vs)
        except Exception as exc:  # gemmi raises RuntimeError/ValueError on malformed files
            raise TemplateError(f"template '{path}' is not a readable PDB/mmCIF model ({exc})") from None
        return Template.from_density(name, density, vs, source=str(path))
    if path.suffix.lower() in MAP_SUFFIXES:
        data, vs_in = read_map(path, source_voxel_size)
        if not np.isclose(vs_in, vs, rtol=1e-4):
            cleaned = prepare_density(data, recentre=True, what=f"template '{path}'")
            data = resample_density(cleaned, vs_in, vs)
        return Template.from_density(name, data, vs, source=str(path))
    raise TemplateError(
        f"template '{path}': unknown file type '{path.suffix}'; expected a map "
        f"({', '.join(MAP_SUFFIXES)}) or an atomic model ({', '.join(ATOMIC_SUFFIXES)})"
    )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(ATOMIC_SUFFIXES + MAP_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _check_name(name: str, where) -> None:
    if name.lower() in RESERVED_NAMES:
        raise TemplateError(f"template '{where}': the name '{name}' is reserved for the {name.lower()} class; rename the file")


def template_files(directory: str | os.PathLike) -> list[Path]:
    """Map and model files directly inside ``directory``, sorted by name."""
    d = Path(directory)
    files = [p for p in d.iterdir() if p.is_file() and (p.suffix.lower() in MAP_SUFFIXES or is_atomic_model(p))]
    return sorted(files, key=lambda p: (_stem(p), p.name))


def load_templates(paths: str | os.PathLike | Iterable[str | os.PathLike], voxel_size: float) -> list[Template]:
    """Load templates from files, directories and/or the word ``builtin``; sorted by name.

    Raises :class:`TemplateError` for a missing path, an empty directory, an unreadable file or
    two templates with the same name.
    """
    vs = _check_voxel_size(voxel_size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Template] = []
    for p in paths:
        if str(p) == BUILTIN and not Path(p).exists():
            out.extend(builtin_templates(vs))
            continue
        path = Path(p)
        if path.is_dir():
            files = template_files(path)
            if not files:
                raise TemplateError(
                    f"template folder '{path}' holds no maps ({', '.join(MAP_SUFFIXES)}) or models "
                    f"({', '.join(ATOMIC_SUFFIXES)})"
                )
            out.extend(load_template(f, vs) for f in files)
        else:
            out.append(load_template(path, vs))
    if not out:
        raise TemplateError("no templates given")
    seen: dict[str, str] = {}
    for t in out:
        if t.name in seen:
            raise TemplateError(f"two templates are named '{t.name}' ({seen[t.name]} and {t.source}); rename one")
        seen[t.name] = t.source
    return sorted(out, key=lambda t: t.name)


# --------------------------------------------------------------------------------------------
# built-in library
# --------------------------------------------------------------------------------------------


def _builtin_resource():
    from importlib.resources import files

    return files("napari_cryo_openset") / "data" / "templates" / _BUILTIN_FILE


def builtin_template_names() -> list[str]:
    """Names of the templates shipped with the package (sorted)."""
    with _builtin_resource().open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        return sorted(str(n) for n in npz["names"])


def builtin_templates(voxel_size: float = 10.0) -> list[Template]:
    """The built-in template library at ``voxel_size`` Å (sorted by name).

    Six density maps at 10 Å (polnet's SHREC'21 set, Apache-2.0, computed from PDB entries):
    ``1bxn`` (RuBisCO), ``1qvr`` (ClpB), ``2cg9`` (Hsp90), ``3j9i`` (20S proteasome), ``4cr2``
    (26S proteasome), ``4v4r`` (70S ribosome) — sizes from ~12 nm to ~30 nm. Stored float16,
    cropped to their support, in ``napari_cryo_openset/data/templates/builtin_templates.npz``
    (written by ``scripts/make_builtin_templates.py``).
    """
    vs = _check_voxel_size(voxel_size)
    resource = _builtin_resource()
    try:
        with resource.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            names = [str(n) for n in npz["names"]]
            src_vs = float(npz["voxel_size"])
            maps = {n: npz[f"map_{n}"].astype(np.float32) for n in names}
    except FileNotFoundError:
        raise TemplateError(f"the built-in template library is missing from the installation ({resource})") from None
    out = []
    for n in sorted(names):
        t = Template.from_density(n, maps[n], src_vs, source=BUILTIN)
        out.append(t.at_voxel_size(vs))
    return out


def templates_fit_box(templates: Sequence[Template], box: int) -> list[str]:
    """Names of templates whose diameter exceeds the box edge (they will be cut by the box)."""
    return [t.name for t in templates if t.diameter > box * t.voxel_size]
