"""Compiling one numba kernel body twice: with threads (big batches) and without (small ones).

numba's on-disk cache names its files after the function's qualified name and first line. Two
``njit`` wrappers of one Python function therefore share a cache index, and a process can load the
*serial* machine code for the parallel dispatcher (or the reverse): the threaded kernel then runs
on one core, silently. Compiling renamed copies gives each variant its own cache files.
"""
from __future__ import annotations

import types

import numba


def _renamed(fn, suffix: str):
    g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    g.__qualname__ = fn.__qualname__ + suffix
    g.__doc__ = fn.__doc__
    g.__module__ = fn.__module__
    return g


def parallel_and_serial(body):
    """(threaded, single-thread) compilations of ``body`` (cache on, fastmath off, nogil)."""
    return (numba.njit(cache=True, nogil=True, parallel=True)(_renamed(body, "_par")),
            numba.njit(cache=True, nogil=True)(_renamed(body, "_ser")))
