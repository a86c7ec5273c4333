"""Checking pickle-based files before anything unpickles them, since unpickling runs whatever a file names.

A pickle is a little program: GLOBAL, STACK_GLOBAL, INST, OBJ and the EXT
opcodes import any callable, and REDUCE, NEWOBJ, OBJ and INST call them, so a
``.pt`` whose object's ``__reduce__`` returns ``(os.system, ("...",))`` runs a
shell command inside ``torch.load(weights_only=False)``. :func:`check` reads
the opcodes with :func:`pickletools.genops`, which executes nothing, and
follows the unpickler's stack, marks and memo on a model that holds only
strings, tuples and globals (so a STACK_GLOBAL's module and name are known
however they were put there, memo included). Every global is compared with
the :class:`Allowlist` of the kind of file; a global it cannot resolve, a call
of anything but an allowed global, or a change to a global object is refused.
:func:`load` unpickles plain data files with an unpickler that can import
nothing but their allowlist.

Files read this way, by their first bytes as torch and numpy tell them apart:
torch's zip checkpoints (the ``data.pkl`` torch's own reader would find, in
an archive laid out as torch.save lays it out: :mod:`vqtool.pickles.torch_zip`),
``.npy`` files holding objects (the pickle after the header), torch's legacy
format and plain pickles (the pickles at the start of the file, as many as
torch reads). torch's pre-1.0 tar format is refused.

:func:`guard_loaders` makes ``torch.load`` (unless ``weights_only=True``) and
``numpy.load`` (with ``allow_pickle``) run :func:`check` first, for the whole
process: every library vqtool drives unpickles through one of the two, so no
file gets unpickled unchecked whatever path reaches it (a checkpoint, a
distillation teacher, torch.hub's cache, timm, any label cache). vqtool's own
earlier checks only refuse sooner, with the kind of file named.

``--trust-pickle`` (``VQTOOL_TRUST_PICKLE=1``) skips the check for a file the
user trusts. Nothing here imports torch or Ultralytics unless a name needs
resolving, and a name is resolved only in a library already imported: the
callers that expect ``ultralytics.*`` names prepare Ultralytics first
(vqtool.detection.ultralytics_env); elsewhere such a name is refused.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import dataclasses
import functools
import importlib
import io
import os
import pickle
import pickletools
import sys
import tarfile
from dataclasses import dataclass, field
from typing import IO, Iterator, NamedTuple

from vqtool.errors import VQError, first_line
from vqtool.pickles.torch_zip import Unusual, data_pickle

TRUST_ENV = "VQTOOL_TRUST_PICKLE"
TRUST_HINT = "--trust-pickle opens a file you trust"
ZIP_MAGIC = b"PK\x03\x04"  # what torch.load and np.load look for; anything else they read as pickles
NPY_MAGIC = b"\x93NUMPY"
LEGACY_PICKLES = 5  # torch's legacy format: magic number, protocol version, system info, the object, storage keys

# What builds numpy arrays and scalars (_frombuffer: protocol 5); numpy.core is how numpy < 2 spelled numpy._core.
NUMPY_ARRAYS = frozenset({
    "numpy.ndarray", "numpy.dtype",
    *(f"{package}.{name}" for package in ("numpy.core", "numpy._core")
      for name in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")),
})
# Numpy arrays and plain data (dicts, lists, strings, numbers); bytes are _codecs.encode calls in the protocol-2
# pickles Python 3 writes (torch.save's among them: a numpy scalar in a checkpoint needs it).
NUMPY_DATA = NUMPY_ARRAYS | {"_codecs.encode"}
# What torch.save writes for tensors, parameters, their storages, shapes, dtypes and devices, and module dicts
# (a subset of torch's own weights_only list: not _rebuild_from_type_v2, which calls a function it is given).
TORCH_TENSORS = frozenset({
    "collections.OrderedDict", "torch.Size", "torch.device",
    *(f"torch.{dtype}" for dtype in ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32",
                                     "int64", "bool")),
    *(f"torch._utils.{name}" for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                                          "_rebuild_parameter_with_state")),
    *(f"torch.{dtype}Storage" for dtype in ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char",
                                            "Byte", "Bool")),
})



@dataclass(frozen=True)
class Allowlist:
    """The globals a genuine file of one kind needs.

    ``names`` may be used and called. A class in ``module_packages`` that is
    an ``nn.Module``, or one defined in ``class_modules``, may be built (NEWOBJ:
    ``cls.__new__`` and its state, no ``__init__``) or stored, never called:
    Ultralytics' model constructors parse and eval a model yaml. ``aliases``
    are the legacy names the loader itself renames.
    """

    kind: str
    names: frozenset[str]
    module_packages: tuple[str, ...] = ()
    class_modules: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)

    def allows(self, module: str, name: str) -> bool:
        dotted = f"{module}.{name}"
        if dotted in self.names:
            return True
        in_package = any(module == p or module.startswith(p + ".") for p in self.module_packages)
        if module.partition(".")[0] not in sys.modules:  # never import a library just to judge a file
            return False
        return (in_package or module in self.class_modules) and _is_allowed_class(
            module, name, nn_module=module not in self.class_modules)


# Ultralytics .pt checkpoints: the 23 globals of yolov8-fall.pt and of the last.pt / best.pt Ultralytics writes
# while training (optimizer state adds nothing; train args add IterableSimpleNamespace), and the few plain types
# and legacy names Ultralytics' own restricted loader lists for official checkpoints (numpy scalars, paths).
YOLO_CHECKPOINT = Allowlist(
    kind="YOLO checkpoint",
    names=TORCH_TENSORS | NUMPY_DATA | {
        "builtins.set", "ultralytics.utils.IterableSimpleNamespace",
        *(f"{module}.{name}" for module in ("pathlib", "pathlib._local") for name in ("PosixPath", "WindowsPath")),
    },
    module_packages=("torch.nn.modules", "ultralytics.nn"),
    class_modules=("ultralytics.utils.loss", "ultralytics.utils.tal"),
    aliases={
        "ultralytics.yolo.utils.IterableSimpleNamespace": "ultralytics.utils.IterableSimpleNamespace",
        "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
        "ultralytics.nn.modules.block.Silence": "torch.nn.modules.linear.Identity",
        "ultralytics.utils.loss.v10DetectLoss": "ultralytics.utils.loss.E2EDetectLoss",
    },
)
# torchvision's pretrained weights in torch.hub's cache, which torch.hub unpickles with weights_only=False.
TORCHVISION_WEIGHTS = Allowlist(kind="torchvision weights file", names=TORCH_TENSORS)
# What the guarded torch.load accepts from any caller: Ultralytics' checkpoints include torch's plain ones.
TORCH_FILE = dataclasses.replace(YOLO_CHECKPOINT, kind="PyTorch checkpoint")
NUMPY_PICKLE = Allowlist(kind="numpy file of objects", names=NUMPY_DATA)
CIFAR_BATCH = Allowlist(kind="CIFAR-10 batch", names=NUMPY_DATA)
LABEL_CACHE = Allowlist(kind="Ultralytics label cache", names=NUMPY_DATA)


class UnsafeFile(VQError):
    """A file refused because opening it could run code it carries (a global its kind of file never needs)."""


def trusted() -> bool:
    """Whether ``--trust-pickle`` (or ``VQTOOL_TRUST_PICKLE=1``) asked to unpickle files unchecked."""
    return os.environ.get(TRUST_ENV) == "1"


def check(source, allowlist: Allowlist) -> None:
    """Nothing, or UnsafeFile naming the file and the first thing refused; VQError if it cannot be read.

    ``source`` is a path, or a binary file at its start. Nothing of it is unpickled. With --trust-pickle nothing
    is checked.
    """
    if trusted():
        return
    name = getattr(source, "name", source) if hasattr(source, "read") else source
    try:
        with _opened(source) as f:
            for stream in _pickles_in(f):
                _Scan(allowlist).run(stream)
    except _Refused as refused:
        raise UnsafeFile(refusal(name, str(refused), allowlist)) from None
    except Unusual as unusual:
        raise UnsafeFile(f"{name}: refused: a zip archive {unusual}, which torch.save never writes (what torch "
                         f"would unpickle from it is ambiguous) ({TRUST_HINT})") from None
    except (ValueError, EOFError, OSError, RuntimeError, NotImplementedError) as error:  # genops' errors among them
        raise VQError(f"{name}: not a readable {allowlist.kind} ({first_line(error)})") from error


@contextlib.contextmanager
def _opened(source) -> Iterator[IO[bytes]]:
    """A path opened, or a stream checked from its start and left where it was."""
    if not hasattr(source, "read"):
        with open(source, "rb") as f:
            yield f
        return
    if not source.seekable() or source.tell() != 0:
        raise OSError("a stream not at its start cannot be checked")
    try:
        yield source
    finally:
        source.seek(0)


def guard_loaders() -> None:
    """From now on (in this process), torch.load and numpy.load check a file before they unpickle it.

    torch.load unpickles unless ``weights_only=True``; numpy.load only with ``allow_pickle``.
    """
    import numpy
    import torch
    import torch.serialization

    checked_torch = _checking(torch.load, "f", TORCH_FILE,
                              lambda args, kwargs: kwargs.get("weights_only") is not True)
    torch.load = torch.serialization.load = checked_torch
    numpy.load = _checking(numpy.load, "file", NUMPY_PICKLE,
                           lambda args, kwargs: kwargs.get("allow_pickle", len(args) > 2 and args[2]))


def _checking(load, file_parameter: str, allowlist: Allowlist, unpickles):
    """``load`` that first checks its file when ``unpickles(args, kwargs)`` (itself if it already does)."""
    if getattr(load, "checks_pickles", False):
        return load

    @functools.wraps(load)
    def checked(*args, **kwargs):
        if unpickles(args, kwargs):
            check(args[0] if args else kwargs.get(file_parameter), allowlist)
        return load(*args, **kwargs)

    checked.checks_pickles = True
    return checked


def load(path, allowlist: Allowlist, **options):
    """``pickle.load`` of ``path`` that imports only ``allowlist.names`` (anything with --trust-pickle)."""
    with open(path, "rb") as f:
        unpickler = pickle.Unpickler(f, **options) if trusted() else _Restricted(f, allowlist, **options)
        try:
            return unpickler.load()
        except _Refused as refused:
            raise UnsafeFile(refusal(path, str(refused), allowlist)) from None
        except Exception as error:  # a corrupt pickle fails in any of a dozen ways
            raise VQError(f"{path}: not a readable {allowlist.kind} ({first_line(error)})") from error


def refusal(path, what: str, allowlist: Allowlist) -> str:
    return f"{path}: refused: it {what}, which a genuine {allowlist.kind} does not ({TRUST_HINT})"


class _Refused(Exception):
    """What a pickle does that its allowlist does not allow, as the end of 'it ...'."""


class _Restricted(pickle.Unpickler):
    """An unpickler whose only importable globals are its allowlist's names."""

    def __init__(self, file, allowlist: Allowlist, **options):
        super().__init__(file, **options)
        self.allowlist = allowlist

    def find_class(self, module, name):
        if f"{module}.{name}" not in self.allowlist.names:
            raise _Refused(f"names {module}.{name}")
        return super().find_class(module, name)


@functools.lru_cache(maxsize=None)
def _is_allowed_class(module: str, name: str, nn_module: bool) -> bool:
    """Whether ``module.name`` is a class (an nn.Module, or else one defined there); imports only that module."""
    if not name.isidentifier():
        return False
    try:
        found = getattr(importlib.import_module(module), name)
    except Exception:  # no such module or name: nothing to allow
        return False
    if not isinstance(found, type):
        return False
    if not nn_module:
        return found.__module__ == module
    import torch

    return issubclass(found, torch.nn.Module)


def _pickles_in(f: IO[bytes]) -> Iterator[IO[bytes]]:
    """Each pickle a loader would read from ``f``, as a stream positioned at its start."""
    head = f.read(len(NPY_MAGIC))
    f.seek(0)
    if head.startswith(ZIP_MAGIC):
        yield io.BytesIO(data_pickle(f))
        return
    if head == NPY_MAGIC:
        _skip_npy_header(f)
    elif _is_tar(f):
        raise _Refused("is a tar archive (torch's pre-1.0 format), whose pickles are not checked")
    for count in range(LEGACY_PICKLES):
        start = f.tell()
        if count and not f.read(1):  # a file of fewer pickles (a plain pickle has one)
            return
        f.seek(start)
        yield f


def _is_tar(f: IO[bytes]) -> bool:
    """What torch.load tries before reading a file as pickles."""
    try:
        tarfile.open(fileobj=f, mode="r:").close()
        return True
    except tarfile.TarError:
        return False
    finally:
        f.seek(0)


def _skip_npy_header(f: IO[bytes]) -> None:
    """Past an .npy header (magic, version, header length, header) to the data, a pickle for object arrays."""
    f.seek(len(NPY_MAGIC))
    major = f.read(2)[:1]
    width = 2 if major == b"\x01" else 4
    f.seek(int.from_bytes(f.read(width), "little"), os.SEEK_CUR)


class _Global(NamedTuple):
    name: str
    callable: bool


_OTHER = object()  # any value the model does not follow (numbers, containers, built objects)
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_MUTATIONS = {"BUILD": 1, "APPEND": 1, "SETITEM": 2}  # opcode -> items above the object it changes
_MARKED_MUTATIONS = {"APPENDS", "SETITEMS", "ADDITEMS"}  # these change the object below their mark


class _Scan:
    """One pickle's opcodes run on a model of the unpickler's stack, marks and memo; raises _Refused."""

    def __init__(self, allowlist: Allowlist):
        self.allowlist = allowlist
        self.stack, self.marks, self.memo, self.proto = [], [], {}, 0

    def run(self, stream: IO[bytes]) -> None:
        for op, arg, _ in pickletools.genops(stream):
            self.step(op, arg)

    def step(self, op, arg) -> None:
        name = op.name
        if name in _STRINGS:
            self.stack.append(arg)
        elif name in _MUTATIONS:
            self._changed(self._below(_MUTATIONS[name]))
            self._generic(op, arg)
        elif name in _MARKED_MUTATIONS:
            self._pop_mark()
            self._changed(self._below(0))
        else:
            getattr(self, f"_op_{name}", self._generic)(op, arg)

    def _generic(self, op, arg) -> None:
        """Take what the opcode takes and leave values the model does not follow (pickletools' stack effect)."""
        if pickletools.markobject in op.stack_before:
            self._pop_mark()
            count = op.stack_before.index(pickletools.markobject)
        else:
            count = len(op.stack_before)
        for _ in range(count):
            self._pop()
        self.stack.extend(_OTHER for _ in op.stack_after)

    # --- the opcodes that name, call or move globals and strings ---

    def _op_PROTO(self, op, proto) -> None:
        self.proto = proto

    def _op_GLOBAL(self, op, arg) -> None:
        self.stack.append(self._global(*arg.split(" ", 1)))

    def _op_STACK_GLOBAL(self, op, arg) -> None:
        name, module = self._pop(), self._pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _Refused("names a global by something other than two strings")
        self.stack.append(self._global(module, name))

    def _op_INST(self, op, arg) -> None:
        self._called(self._global(*arg.split(" ", 1)))
        self._pop_mark()
        self.stack.append(_OTHER)

    def _op_OBJ(self, op, arg) -> None:
        items = self._pop_mark()
        if not items:
            raise ValueError("OBJ without a class")
        self._called(items[0])
        self.stack.append(_OTHER)

    def _op_REDUCE(self, op, arg) -> None:
        self._called(self._below(1))
        self._generic(op, arg)

    def _op_NEWOBJ(self, op, arg) -> None:
        self._built(self._below(1))
        self._generic(op, arg)

    def _op_NEWOBJ_EX(self, op, arg) -> None:
        self._built(self._below(2))
        self._generic(op, arg)

    def _op_EXT1(self, op, code) -> None:
        raise _Refused(f"names a global by extension code {code}")

    _op_EXT2 = _op_EXT4 = _op_EXT1

    def _op_TUPLE(self, op, arg) -> None:  # tuples are followed for persistent ids (below)
        items = self._pop_mark()
        self.stack.append(tuple(items))

    def _op_TUPLE1(self, op, arg) -> None:
        items = [self._pop() for _ in range(int(op.name[-1]))]
        self.stack.append(tuple(reversed(items)))

    _op_TUPLE2 = _op_TUPLE3 = _op_TUPLE1

    def _op_EMPTY_TUPLE(self, op, arg) -> None:
        self.stack.append(())

    def _op_BINPERSID(self, op, arg) -> None:
        """torch's legacy format keeps a module's class as ``('module', class, file, source)``, which its
        persistent_load returns as the class; any other id is a storage."""
        pid = self._pop()
        is_module = isinstance(pid, tuple) and len(pid) > 1 and pid[0] == "module"
        self.stack.append(pid[1] if is_module else _OTHER)

    def _op_MARK(self, op, arg) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def _op_POP(self, op, arg) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _op_DUP(self, op, arg) -> None:
        self.stack.append(self._below(0))

    def _op_PUT(self, op, index) -> None:
        self.memo[index] = self._below(0)

    _op_BINPUT = _op_LONG_BINPUT = _op_PUT

    def _op_MEMOIZE(self, op, arg) -> None:
        self.memo[len(self.memo)] = self._below(0)

    def _op_GET(self, op, index) -> None:
        if index not in self.memo:
            raise _Refused(f"reads memo entry {index}, which it never stored")
        self.stack.append(self.memo[index])

    _op_BINGET = _op_LONG_BINGET = _op_GET

    # --- what is allowed ---

    def _global(self, module: str, name: str) -> _Global:
        """A global by the name the unpickler resolves (Python 2 names, the loader's aliases), if allowed."""
        if self.proto < 3:  # what pickle's fix_imports does
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        dotted = self.allowlist.aliases.get(f"{module}.{name}", f"{module}.{name}")
        if "." in name:  # a protocol-4 path into an attribute: never a name an allowlist holds
            raise _Refused(f"names {dotted}")
        module, _, name = dotted.rpartition(".")
        if not self.allowlist.allows(module, name):
            raise _Refused(f"names {dotted}")
        return _Global(dotted, dotted in self.allowlist.names)

    def _called(self, item) -> None:
        if not isinstance(item, _Global):
            raise _Refused("calls an object it built (only allowed globals may be called)")
        if not item.callable:
            raise _Refused(f"calls {item.name} (a class it may only rebuild from its state)")

    def _built(self, item) -> None:
        if not isinstance(item, _Global):
            raise _Refused("builds an object of a class it computed")

    def _changed(self, item) -> None:
        if isinstance(item, _Global):
            raise _Refused(f"changes {item.name} itself")

    def _below(self, depth: int):
        if len(self.stack) <= depth:
            raise ValueError("stack underflow")
        return self.stack[-1 - depth]

    def _pop(self):
        if not self.stack:
            raise ValueError("stack underflow")
        return self.stack.pop()

    def _pop_mark(self) -> list:
        if not self.marks:
            raise ValueError("no MARK on the stack")
        items, self.stack = self.stack, self.marks.pop()
        return items
