"""Arrays in files, memory-mapped: what a split's ``pixels`` are when they come from the store.

Indexing a :class:`MappedRows` gathers rows into an ordinary tensor (one copy,
from the page cache); :meth:`MappedRows.subset` is a view, so shards and
held-out parts cost no memory. The mapping is private (copy-on-write), so
nothing written to a gathered batch can reach the file. Pages a process has
read count in its resident memory; once a mapping is larger than
``RESIDENT_LIMIT``, they are handed back to the page cache every
``RELEASE_EVERY`` bytes read, so memory does not grow with the dataset.
"""

from __future__ import annotations

import math
import mmap
import threading

import numpy as np
import torch

RESIDENT_LIMIT = 1024**3
RELEASE_EVERY = 256 * 1024**2


class _Mapping:
    """One mapped file: its tensor, and the bookkeeping that hands read pages back."""

    def __init__(self, path: str, dtype: np.dtype, shape: tuple[int, ...]):
        with open(path, "rb") as file:
            self.mmap = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        array = np.frombuffer(self.mmap, dtype=dtype, count=math.prod(shape)).reshape(shape)
        self.tensor = torch.from_numpy(array)
        self.path = path
        self.read = 0
        self.lock = threading.Lock()

    def gather(self, index: torch.Tensor, pin: bool) -> torch.Tensor:
        out = torch.empty((len(index), *self.tensor.shape[1:]), dtype=self.tensor.dtype, pin_memory=pin)
        torch.index_select(self.tensor, 0, index, out=out)
        if len(self.mmap) > RESIDENT_LIMIT and hasattr(mmap, "MADV_DONTNEED"):
            with self.lock:
                self.read += out.nbytes
                if self.read >= RELEASE_EVERY:  # unmodified private pages: dropped here, still cached by the OS
                    self.mmap.madvise(mmap.MADV_DONTNEED)
                    self.read = 0
        return out


class MappedRows:
    """Rows of an N×... array in a file (all of them, or those of ``rows``), gathered on indexing."""

    def __init__(self, mapping: _Mapping, rows: torch.Tensor | None = None):
        self._mapping = mapping
        self.rows = rows

    @classmethod
    def open(cls, path: str, dtype, shape: tuple[int, ...], rows: torch.Tensor | None = None) -> "MappedRows":
        return cls(_Mapping(path, np.dtype(dtype), shape), rows)

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self._mapping.tensor)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._mapping.tensor.shape[1:]))

    @property
    def source(self) -> str:
        """The file the rows are mapped from."""
        return self._mapping.path

    @property
    def dtype(self) -> torch.dtype:
        return self._mapping.tensor.dtype

    def _positions(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            key = torch.arange(len(self))[key]
        key = torch.as_tensor(key, dtype=torch.long)
        return key if self.rows is None else self.rows[key]

    def gather(self, key, pin: bool = False) -> torch.Tensor:
        """The rows at ``key`` (positions or a slice) as a new tensor, in pinned memory with ``pin``."""
        return self._mapping.gather(self._positions(key), pin)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self.gather([key])[0]
        return self.gather(key)

    def subset(self, index: torch.Tensor) -> "MappedRows":
        return MappedRows(self._mapping, self._positions(index))
