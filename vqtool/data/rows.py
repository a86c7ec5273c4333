"""Arrays in files on disk: what a split's ``pixels`` are when they come from the store.

Indexing a :class:`StoredRows` gathers rows from the file into an ordinary
tensor (positional reads through the page cache, consecutive rows in one
call, scattered straight into the batch); :meth:`StoredRows.subset` is a view,
so shards and held-out parts cost no memory. Nothing is mapped into the
process: reading a dataset larger than memory leaves only the batches in its
resident memory, and the OS keeps what fits in its page cache. (Page faults on
a memory map measured 3 to 10 times slower than these reads on the development
machine, and every page read would count in the process's memory.)
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

MAX_BUFFERS = 512  # rows per read call (the system allows 1,024 buffers)


class _RowFile:
    """One array file: its row layout, and reads of rows into a batch."""

    def __init__(self, path: str, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.shape = path, shape
        self.dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        self.row_bytes = math.prod(shape[1:]) * np.dtype(dtype).itemsize
        self.descriptor = os.open(path, os.O_RDONLY)

    def __del__(self):
        descriptor = getattr(self, "descriptor", None)
        if descriptor is not None:
            os.close(descriptor)

    def gather(self, index: torch.Tensor, pin: bool) -> torch.Tensor:
        out = torch.empty((len(index), *self.shape[1:]), dtype=self.dtype, pin_memory=pin)
        rows = out.view(torch.uint8).numpy().reshape(len(index), self.row_bytes) if len(index) else None
        positions = index.numpy()
        order = np.argsort(positions, kind="stable")
        start = 0
        while start < len(order):  # a run of consecutive file rows: one read, scattered into the batch
            stop = start + 1
            while (stop < len(order) and stop - start < MAX_BUFFERS
                   and positions[order[stop]] == positions[order[stop - 1]] + 1):
                stop += 1
            self._read(positions[order[start]], [memoryview(rows[j]) for j in order[start:stop]])
            start = stop
        return out

    def _read(self, row: int, buffers: list) -> None:
        wanted, offset = sum(len(b) for b in buffers), int(row) * self.row_bytes
        if os.preadv(self.descriptor, buffers, offset) != wanted:
            raise OSError(f"{self.path}: shorter than its index says (row {row})")


class StoredRows:
    """Rows of an N×... array in a file (all of them, or those of ``rows``), read on indexing."""

    def __init__(self, file: _RowFile, rows: torch.Tensor | None = None):
        self._file = file
        self.rows = rows

    @classmethod
    def open(cls, path: str, dtype, shape: tuple[int, ...], rows: torch.Tensor | None = None) -> "StoredRows":
        return cls(_RowFile(path, np.dtype(dtype), tuple(shape)), rows)

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self._file.shape[0]

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._file.shape[1:]))

    @property
    def source(self) -> str:
        """The file the rows are read from."""
        return self._file.path

    @property
    def dtype(self) -> torch.dtype:
        return self._file.dtype

    def _positions(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            key = torch.arange(len(self))[key]
        key = torch.as_tensor(key, dtype=torch.long)
        return key if self.rows is None else self.rows[key]

    def gather(self, key, pin: bool = False) -> torch.Tensor:
        """The rows at ``key`` (positions or a slice) as a new tensor, in pinned memory with ``pin``."""
        return self._file.gather(self._positions(key), pin)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self.gather([key])[0]
        return self.gather(key)

    def subset(self, index: torch.Tensor) -> "StoredRows":
        return StoredRows(self._file, self._positions(index))
