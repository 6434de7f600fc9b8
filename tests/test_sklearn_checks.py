"""scikit-learn's own estimator checks, on plain arrays, with no expected failures."""

import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    parametrize_with_checks,
)

from skmetalstsq import TensorMapLstsq


@parametrize_with_checks([TensorMapLstsq()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_pandas_column_names():
    # not part of parametrize_with_checks' set for regressors, but pandas users
    # expect feature_names_in_ to be kept and checked
    pytest.importorskip("pandas")
    check_dataframe_column_names_consistency("TensorMapLstsq", TensorMapLstsq())
