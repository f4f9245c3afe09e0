"""The video INR kinds nervcodec knows, by name. A new model: its file, and one line below."""
from __future__ import annotations

from .hnerv import HNeRV
from .kind import InrKind
from .nervpp import NeRVppKind
from .nirvana import Nirvana

_KINDS: dict[str, InrKind] = {k.name: k for k in (
    HNeRV(),
    NeRVppKind(),
    Nirvana(),
)}

#: The kinds' names, in the order the CLI lists them.
KINDS = tuple(_KINDS)


def get_kind(name: str) -> InrKind:
    """The kind named ``name``; ValueError naming the known ones for any other."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model kind {name!r}; choose from {', '.join(KINDS)}") from None
