"""scikit-learn estimators for least-squares fits on metatensor TensorMaps."""

from importlib.metadata import PackageNotFoundError, version

from . import distributed, metrics, model_selection, preprocessing
from ._bayes import TensorMapBayesianRidge
from ._cv import TensorMapLstsqCV
from ._estimator import TensorMapLstsq
from ._indexed import IndexedTensorMap
from .model_selection import cross_val_predict
from .persistence import load, save
from .preprocessing import TensorMapFunctionTransformer, TensorMapStandardScaler

try:
    __version__ = version("skmetalstsq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "IndexedTensorMap",
    "TensorMapBayesianRidge",
    "TensorMapFunctionTransformer",
    "TensorMapLstsq",
    "TensorMapLstsqCV",
    "TensorMapStandardScaler",
    "cross_val_predict",
    "distributed",
    "load",
    "metrics",
    "model_selection",
    "preprocessing",
    "save",
    "__version__",
]
