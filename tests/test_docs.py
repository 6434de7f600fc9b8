"""The documentation builds with warnings as errors, runs every example, documents the API."""

import importlib
import re

import pytest

import skmetalstsq

pytest.importorskip("sphinx", reason="the docs extra is not installed")

from docs_build import EXAMPLES, build_docs, script_output  # noqa: E402

SUBMODULES = ("distributed", "metrics", "model_selection", "preprocessing")


@pytest.fixture(scope="module")
def docs():
    return build_docs()


def test_build_has_no_warnings(docs):
    assert docs.returncode == 0, docs.output[-6000:]


def test_every_example_runs_and_is_downloadable(docs):
    assert EXAMPLES, "no example found"
    executed = re.search(r"successfully executed (\d+) out of (\d+) files", docs.output)
    assert executed, docs.output[-4000:]
    assert int(executed.group(1)) == int(executed.group(2)) == len(EXAMPLES)
    downloads = {path.name for path in (docs.html / "_downloads").rglob("*") if path.is_file()}
    for example in EXAMPLES:
        assert (docs.html / "auto_examples" / f"{example.stem}.html").is_file()
        assert f"{example.stem}.ipynb" in downloads
        assert f"{example.stem}.py" in downloads
        # every example prints something; its output is on its page
        assert script_output(docs, example.stem).strip(), example.name


def _documented_names(docs):
    page = (docs.html / "api.html").read_text()
    return set(re.findall(r'<dt class="sig sig-object py" id="([\w.]+)"', page))


def test_every_public_name_is_in_the_api_reference(docs):
    documented = _documented_names(docs)
    missing = []
    for module_name in SUBMODULES:
        module = importlib.import_module(f"skmetalstsq.{module_name}")
        for name in module.__all__:
            if f"skmetalstsq.{module_name}.{name}" not in documented:
                missing.append(f"skmetalstsq.{module_name}.{name}")
    for name in skmetalstsq.__all__:
        if name == "__version__" or name in SUBMODULES:
            continue
        # re-exports of a submodule's names are documented under the submodule
        candidates = [f"skmetalstsq.{name}"]
        candidates += [f"skmetalstsq.{module}.{name}" for module in SUBMODULES]
        if not documented.intersection(candidates):
            missing.append(f"skmetalstsq.{name}")
    assert not missing, f"not in docs/api.rst: {missing}"


def test_estimator_methods_and_parameters_are_rendered(docs):
    documented = _documented_names(docs)
    for method in ("fit", "predict", "score"):
        assert f"skmetalstsq.TensorMapLstsq.{method}" in documented
    page = (docs.html / "api.html").read_text()
    # numpydoc turned the Parameters sections into field lists
    for parameter in ("rcond", "driver", "device", "n_jobs", "rconds", "per_block"):
        assert f"<strong>{parameter}</strong>" in page, parameter


def test_user_guide_pages_are_built(docs):
    pages = ("data_model", "rcond_drivers", "weights", "model_selection", "devices", "torch")
    for page in (*pages, "persistence", "errors"):
        assert (docs.html / "user_guide" / f"{page}.html").is_file(), page
    assert (docs.html / "parallelism.html").is_file()
    assert (docs.html / "larger_than_memory.html").is_file()
