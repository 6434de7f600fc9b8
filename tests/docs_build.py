"""One build of the documentation per test session, shared by the tests that read it.

The build runs on a copy of ``docs/`` and ``examples/`` in a temporary directory, so
sphinx-gallery executes every example afresh (it skips examples whose output is
already in the source tree) and nothing is written into the repository.
"""

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: generous: the build takes well under this; a hung example must not hang the suite
TIMEOUT_S = 1200


@dataclass
class DocsBuild:
    """What one ``sphinx-build -W --keep-going -b html`` run left behind.

    Attributes
    ----------
    returncode : int
        sphinx-build's exit status (non-zero on any warning).
    output : str
        Its stdout and stderr.
    source : pathlib.Path
        The copied ``docs/`` directory, with sphinx-gallery's generated pages in
        ``auto_examples/``.
    html : pathlib.Path
        The built site.
    """

    returncode: int
    output: str
    source: Path
    html: Path


def _ignore_generated(directory, names):
    generated = {"_build", "auto_examples", "gen_modules", "sg_execution_times.rst"}
    return [name for name in names if name in generated or name == "__pycache__"]


@functools.cache
def build_docs():
    """Build the documentation once and return a :class:`DocsBuild`.

    The examples run with one BLAS thread per process and matplotlib's Agg
    backend: the build then does not depend on a display, nor slow down when other
    processes share the cores.
    """
    workdir = Path(tempfile.mkdtemp(prefix="skmetalstsq-docs-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    source = workdir / "docs"
    shutil.copytree(ROOT / "docs", source, ignore=_ignore_generated)
    shutil.copytree(ROOT / "examples", workdir / "examples", ignore=_ignore_generated)
    html = workdir / "html"
    env = dict(os.environ)
    env.update(
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]
    completed = subprocess.run(
        [*command, str(source), str(html)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return DocsBuild(completed.returncode, completed.stdout + completed.stderr, source, html)


def script_output(build, example):
    """What the example ``example`` (a file name stem) printed during the build.

    sphinx-gallery writes each cell's output into the example's generated page,
    in a block after ``.. rst-class:: sphx-glr-script-out``; this joins them.
    """
    page = build.source / "auto_examples" / f"{example}.rst"
    if not page.exists():
        raise AssertionError(
            f"sphinx-gallery made no page for {example}; end of the build output:\n"
            + build.output[-4000:]
        )
    outputs = []
    for chunk in page.read_text().split(".. rst-class:: sphx-glr-script-out")[1:]:
        chunk = chunk.split(".. GENERATED FROM PYTHON SOURCE")[0]
        lines = chunk.splitlines()
        outputs += [line[4:] for line in lines if line.startswith("    ")]
    return "\n".join(outputs)


#: a number as the examples print it
NUMBER = r"([0-9.]+(?:e[+-]\d+)?)"


def numbers(pattern, text):
    """The groups of the first match of ``pattern`` in ``text``, as floats."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return [float(group) for group in match.groups()]


#: the modules the molecular dynamics examples need (the ``examples`` extra)
MD_MODULES = ("ase", "matplotlib", "featomic.torch", "metatomic.torch", "metatomic_ase")

#: the filters of setup.cfg: warnings are errors, except TorchScript's deprecation
_WARNINGS = ["-W", "error", "-W", "ignore:`torch.jit.:DeprecationWarning"]


def run_example(example, timeout_s=300):
    """What ``examples/<example>.py`` printed, run as ``__main__`` in a fresh interpreter.

    The exported classes are then ``__main__.*``, which TorchScript serialises; the
    run has matplotlib's Agg backend and warnings as errors (as pytest has), prints
    the number of figures drawn last, and is skipped where the ``examples`` extra
    is missing.
    """
    import pytest

    for module in MD_MODULES:
        # ImportError too: a compiled extension built for another torch raises it
        pytest.importorskip(
            module, reason="the examples extra is not installed", exc_type=ImportError
        )
    path = ROOT / "examples" / f"{example}.py"
    runner = (
        "import runpy\nimport matplotlib.pyplot as plt\n"
        f"runpy.run_path({str(path)!r}, run_name='__main__')\n"
        "print('figures drawn:', len(plt.get_fignums()))\n"
    )
    completed = subprocess.run(
        [sys.executable, *_WARNINGS, "-c", runner],
        cwd=ROOT,
        env=dict(os.environ, MPLBACKEND="Agg"),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed.stdout
