"""The server's memory under many users: few malloc arenas, and freed pages handed back after each edit.

glibc keeps up to 8 arenas per core, one per thread that ever ran an edit, each holding the freed images and
tensors of its last request; ``bound_memory`` caps them once per process and ``release_memory`` returns what a
finished request freed. Elsewhere than glibc both do nothing. What this saved under load: the README's "Serving".
"""
from __future__ import annotations

import ctypes
import ctypes.util

LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if hasattr(ctypes.CDLL(None), "malloc_trim") else None  # glibc


def bound_memory(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (by default up to 8 per core, one per thread that ever ran an edit, each keeping
    the freed images and tensors of its last request) so the server's memory stays flat under many users."""
    if LIBC is not None:
        LIBC.mallopt(-8, arenas)  # M_ARENA_MAX


def release_memory() -> None:
    """Give the freed pages of a finished request back to the system (glibc keeps them otherwise)."""
    if LIBC is not None:
        LIBC.malloc_trim(0)
