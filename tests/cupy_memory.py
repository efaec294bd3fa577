"""Device memory of the CuPy stand-in: the bytes its live arrays hold, kept the way CuPy's memory pool
reports them (tinymix/bench reads them on the cupy backend)."""
import weakref

import numpy


class MemoryPool:
    """CuPy's pool keeps freed blocks for reuse, so total_bytes() holds the high-water mark until
    free_all_blocks(); used_bytes() is what live arrays occupy."""

    def __init__(self):
        self._used, self._held, self._owners = 0, 0, {}

    def _track(self, array):
        root = array
        while isinstance(root.base, numpy.ndarray):
            root = root.base
        if id(root) in self._owners or root.base is not None:
            return
        self._owners[id(root)] = weakref.finalize(root, self._release, id(root), root.nbytes)
        self._used += root.nbytes
        self._held = max(self._held, self._used)

    def _release(self, key, nbytes):
        self._owners.pop(key, None)
        self._used -= nbytes

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._held

    def free_bytes(self):
        return self._held - self._used

    def free_all_blocks(self, stream=None):
        self._held = self._used


POOL = MemoryPool()
