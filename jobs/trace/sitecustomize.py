"""Loaded by every Python process started with jobs/trace on PYTHONPATH (jobs/trace_way.py):
with COLORIZE_TRACE set, each call into the package's functions appends its module to that file
(one line per call, with the process id; not the main thread's, where a local run's client plans
and watches), so the dask worker's share of a run can be read back."""

import os
import sys
import threading

_OUT = os.environ.get("COLORIZE_TRACE")
_ROOT = os.environ.get("COLORIZE_TRACE_ROOT", "")
if _OUT and _ROOT:
    _lock = threading.Lock()
    _f = open(_OUT, "a", buffering=1)
    _pid = os.getpid()
    _pkg = os.path.join(_ROOT, "pipeline") + os.sep

    def _profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        fn = code.co_filename
        if not fn.startswith(_pkg) or code.co_name == "<module>":
            return
        mod = fn[len(_ROOT) + 1:-3].replace(os.sep, ".")
        if threading.current_thread() is threading.main_thread():
            return  # a local run's client: the shard runs in a worker's threads
        with _lock:
            _f.write(f"{_pid} {mod} {code.co_name}\n")

    sys.setprofile(_profile)
    threading.setprofile(_profile)
