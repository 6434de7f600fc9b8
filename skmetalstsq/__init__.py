"""scikit-learn estimators for least-squares fits on metatensor TensorMaps."""

from importlib.metadata import PackageNotFoundError, version

from . import metrics
from ._cv import TensorMapLstsqCV
from ._estimator import TensorMapLstsq
from ._indexed import IndexedTensorMap

try:
    __version__ = version("skmetalstsq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["IndexedTensorMap", "TensorMapLstsq", "TensorMapLstsqCV", "metrics", "__version__"]
