"""Every parameter set of the product, in one torch-free package (no Qt, no torch).

Each field is declared once with its default, unit, range, help and command-line flag
(:func:`param`); the command line generates its options from them (``cli._args``), the widgets
read their defaults and ranges from them (:func:`widget_options`), and ``__post_init__`` /
``validate`` checks them — once. Messages name the field (``epochs must be …``); front ends
swap in their own name for it (``--epochs must be …``).

=====================  ===========================================================
:class:`PickingParams`  DoG picking (``pick``, the Pick widget, ``run``)
:class:`ImagingCondition`  how a tilt series is recorded (simulation)
:class:`DatasetParams`  a simulated, labelled subtomogram set (``simulate``)
:class:`TrainParams`    source training (``train``, the Model widget)
:class:`AdaptParams`    3D-ADA / MLUDA (``adapt``, the Adapt & predict widget)
:class:`PredictParams`  prediction (``predict``)
:class:`EmbedParams`    the t-SNE map and clusters of unknowns (Results widget)
:class:`AlignParams`    subtomogram alignment and averaging (:mod:`napari_cryo_openset.align`)
:class:`RunParams`      a whole run: the above, composed (``run``, the demo)
=====================  ===========================================================
"""

from .align import SCORES, SPLITS, AlignParams, symmetry_order
from ._spec import Spec, check_fields, check_value, flag_of, param, spec, specs, widget_options
from .learning import (
    ARCHITECTURES,
    DEFAULT_LEARNING_RATE,
    METHODS,
    NORMS,
    THRESHOLD_RULES,
    AdaptParams,
    EmbedParams,
    PredictParams,
    TrainParams,
)
from .picking import POLARITIES, THRESHOLD_METHODS, PickingParams
from .run import FAST_SIZES, FULL_SIZES, RunParams
from .simulation import EMPTY_CLASS, MODES, DatasetParams, ImagingCondition, Range

__all__ = [
    "SCORES", "SPLITS", "AlignParams", "symmetry_order",
    "ARCHITECTURES", "DEFAULT_LEARNING_RATE", "EMPTY_CLASS", "FAST_SIZES", "FULL_SIZES", "METHODS", "MODES", "NORMS",
    "POLARITIES", "THRESHOLD_METHODS", "THRESHOLD_RULES", "AdaptParams", "DatasetParams", "EmbedParams",
    "ImagingCondition", "PickingParams", "PredictParams", "Range", "RunParams", "Spec", "TrainParams",
    "check_fields", "check_value", "flag_of", "param", "spec", "specs", "widget_options",
]
