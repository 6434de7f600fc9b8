"""Peak resident memory that one call adds, read from ``/proc/self/status``.

The benchmarks run each method in a fresh child process. ``VmHWM`` (the peak
resident size) is reset by writing ``5`` to ``/proc/self/clear_refs``, then the
resident size ``VmRSS`` is read, the method runs, and ``VmHWM`` is read again.
``ru_maxrss`` would count the peak of the imports and warm-up (and, in a child,
its parent's across ``exec``): it is used only where ``clear_refs`` cannot be
written, and the result says so.
"""

import resource


def status_kib(field):
    """A field of ``/proc/self/status`` in KiB (``VmRSS``, ``VmHWM``, ...)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_added(function):
    """``(function(), KiB of resident memory added at the peak, whether VmHWM was reset)``."""
    exact = _reset_peak()
    before = status_kib("VmRSS")
    result = function()
    peak = status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, peak - before, exact
