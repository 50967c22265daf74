"""Digests of values by content, never by identity: task arguments, globals, closures.

Every digest is 16 bytes of ``xxhash.xxh3_128``: a non-cryptographic hash that runs at
memory speed (tens of GB/s here), so a 1 GB array costs tens of milliseconds, not
seconds (``hashlib.sha256`` runs at ~1 GB/s, Dask's ``tokenize`` uses md5/xxhash over
a copy).  The cache's trust comes from signing stored entries, not from this hash.

What each kind of value contributes:

* ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``: a type tag
  and their exact bytes (``1``, ``1.0`` and ``True`` differ);
* ``list``, ``tuple`` and ``dict`` (in order) are walked with an explicit stack, so
  nesting depth is not limited by the recursion limit; ``set`` and ``frozenset`` are
  order-independent (their items' digests, sorted), so ``PYTHONHASHSEED`` does not
  matter;
* NumPy arrays: dtype, shape and memory layout, and the array's memory hashed in
  place (C- or F-contiguous arrays without a copy; other views in C order, their
  contiguous rows in place, the rest copied 256 KB at a time into a reused buffer).
  Object arrays are walked as lists.  An array mutated in place is a change;
* pandas objects: ``pandas.util.hash_pandas_object`` over the values, plus the index,
  columns, dtypes (categories included), names and ``attrs``;
* functions, classes and methods: through the code printer (``code_print``): by code
  for the user's own code, by name and package version for installed code;
* anything else: a pickle (protocol 5, out-of-band buffers hashed in place) whose
  functions and classes are replaced by their prints, taken twice: if the two differ
  the pickle is not deterministic and the value is uncacheable.

Locks, sockets, files, threads, generators, coroutines and the user's own modules
cannot be fingerprinted safely: they raise :class:`Uncacheable` naming what they are
("a socket"), and the caller turns that into the task's reason.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from xxhash import xxh3_128

__all__ = ["Uncacheable", "ValuePrinter", "digest_of"]


class Uncacheable(Exception):
    """A value that cannot be fingerprinted safely; ``str(exc)`` says what it is."""


def digest_of(data: Any) -> bytes:
    """The 16-byte digest of a bytes-like object."""
    return xxh3_128(data).digest()


_NONE = digest_of(b"N")
_TRUE = digest_of(b"T")
_FALSE = digest_of(b"F")
_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<q").pack
_PIECE = 256 << 10  # bytes per copied piece of a strided array (see _feed)
_ROW_MIN = 64 << 10  # contiguous rows at least this long are hashed in place
_SKIP_SUBCLASS_ATTRS = frozenset({"_mmap", "filename", "offset", "mode"})  # np.memmap's file


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) >> 3, "little", signed=True)


def _lock_types() -> tuple[type, ...]:
    lock = threading.Lock()
    rlock = threading.RLock()
    return (
        type(lock),
        type(rlock),
        threading.Condition,
        threading.Semaphore,
        threading.Event,
        threading.Barrier,
    )


_LOCKS = _lock_types()
_GENERATORS = (types.GeneratorType, types.AsyncGeneratorType)
_FUNCTION_LIKE = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    type,
)


def unsafe_kind(value: Any) -> str | None:
    """What ``value`` is, when it is something that can never be fingerprinted safely."""
    if isinstance(value, _LOCKS):
        return "a lock"
    if isinstance(value, _GENERATORS):
        return "a generator"
    if isinstance(value, types.CoroutineType):
        return "a coroutine"
    if isinstance(value, io.IOBase):
        return "a file object"
    if isinstance(value, threading.Thread):
        return "a thread"
    socket = sys.modules.get("socket")
    if socket is not None and isinstance(value, socket.socket):
        return "a socket"
    if isinstance(value, types.FrameType | types.TracebackType):
        return "a frame"
    return None


def _describe(value: Any) -> str:
    name = type(value).__qualname__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


class ValuePrinter:
    """Digests of values for one fingerprinting run.

    ``callable_digest(obj, refs)`` is the code printer's hook: the digest of a function,
    class or method met inside a value (``refs`` collects the user's own code met while
    printing another piece of user code, see ``code_print``).  Digests of objects that
    are not plain scalars are memoized by identity for the run (the objects are kept
    alive meanwhile, so an id is not reused): an array read by 1,000 tasks is hashed once.
    """

    def __init__(self, callable_digest: Callable[[Any, list | None], bytes], module_digest):
        self._callable_digest = callable_digest
        self._module_digest = module_digest
        self._memo: dict[tuple[int, bool], tuple[Any, bytes, tuple]] = {}
        self._active: set[tuple[int, bool]] = set()  # objects being hashed (self-reference)
        self._renames: list[dict] = []  # key renames of the Dask subgraphs being hashed

    # -- entry point -------------------------------------------------------------

    def digest(self, value: Any, refs: list | None = None) -> bytes:
        """The digest of ``value``; raises :class:`Uncacheable`."""
        typ = type(value)
        if typ is int:
            return digest_of(b"i" + _int_bytes(value))
        if typ is str:
            return digest_of(b"s" + value.encode("utf-8", "surrogatepass"))
        if typ is float:
            return digest_of(b"f" + _pack_d(value))
        if value is None:
            return _NONE
        if typ is bool:
            return _TRUE if value else _FALSE
        if typ is bytes:
            return digest_of(b"b" + value)
        if typ in (list, tuple, dict):
            out = bytearray()
            self._encode(value, out, refs)
            return digest_of(out)
        return self._object(value, refs)

    # -- containers --------------------------------------------------------------

    def _encode(self, value: Any, out: bytearray, refs: list | None) -> None:
        """Append a self-delimiting encoding of ``value`` to ``out``, iteratively."""
        stack = [iter((value,))]
        while stack:
            for item in stack[-1]:
                typ = type(item)
                if typ is int:
                    data = _int_bytes(item)
                    out += b"i" + _pack_q(len(data)) + data
                elif typ is str:
                    data = item.encode("utf-8", "surrogatepass")
                    out += b"s" + _pack_q(len(data)) + data
                elif typ is float:
                    out += b"f" + _pack_d(item)
                elif item is None:
                    out += b"N"
                elif typ is bool:
                    out += b"T" if item else b"F"
                elif typ is bytes:
                    out += b"b" + _pack_q(len(item)) + item
                elif typ is list or typ is tuple:
                    out += (b"[" if typ is list else b"(") + _pack_q(len(item))
                    stack.append(iter(item))
                    break
                elif typ is dict:
                    out += b"{" + _pack_q(len(item))
                    stack.append(_pairs(item))
                    break
                else:
                    out += b"o" + self._object(item, refs)
            else:
                stack.pop()

    def _object(self, value: Any, refs: list | None) -> bytes:
        if _is_dask_node(type(value)):  # not memoized: its keys read through renames
            return self._dask_node(value, refs)
        # Memoized per (object, mode): inside a unit (``refs`` given) user code stands
        # by name and is recorded as an edge, so the edges found are replayed on a hit.
        key = (id(value), refs is None)
        known = self._memo.get(key)
        if known is not None and known[0] is value:
            if refs is not None:
                refs.extend(known[2])
            return known[1]
        if key in self._active:
            raise Uncacheable(f"{_describe(value)} that refers to itself through its code")
        self._active.add(key)
        found: list | None = None if refs is None else []
        try:
            digest = self._object_digest(value, found)
        finally:
            self._active.discard(key)
        if found:
            refs.extend(found)
        self._memo[key] = (value, digest, tuple(found or ()))
        return digest

    def _object_digest(self, value: Any, refs: list | None) -> bytes:
        typ = type(value)
        if typ is set or typ is frozenset:
            items = sorted(self.digest(item, refs) for item in value)
            return digest_of((b"S" if typ is set else b"Z") + b"".join(items))
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
            return self._numpy(value, numpy, refs)
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(
            value, pandas.Series | pandas.DataFrame | pandas.Index
        ):
            try:
                return self._pandas(value, pandas, refs)
            except TypeError:  # unhashable cells (lists, dicts): the pickle decides
                return self._pickled(value, refs)
        kind = unsafe_kind(value)
        if kind is not None:
            raise Uncacheable(kind)
        if isinstance(value, _FUNCTION_LIKE) or hasattr(value, "__wrapped__") and callable(value):
            return self._callable_digest(value, refs)
        if isinstance(value, types.ModuleType):
            return self._module_digest(value)
        if typ is complex:
            return digest_of(b"c" + _pack_d(value.real) + _pack_d(value.imag))
        if typ is bytearray:
            return digest_of(b"B" + value)
        if typ is memoryview:
            head = f"m{value.format}{value.shape}".encode()
            return digest_of(head + value.tobytes() if not value.c_contiguous else head + value)
        if typ is range or typ is slice:
            return self.digest((typ.__name__, value.start, value.stop, value.step), refs)
        if value is Ellipsis or value is NotImplemented:
            return digest_of(repr(value).encode())
        return self._pickled(value, refs)

    # -- arrays and frames -------------------------------------------------------

    def _numpy(self, value: Any, numpy: Any, refs: list | None) -> bytes:
        if isinstance(value, numpy.generic):
            if value.dtype.hasobject:
                return self._pickled(value, refs)
            return digest_of(b"g" + value.dtype.str.encode() + value.tobytes())
        if type(value) is not numpy.ndarray:  # a subclass: the data, its type and its state
            state = {k: v for k, v in vars(value).items() if k not in _SKIP_SUBCLASS_ATTRS}
            base = self.array_digest(value.view(numpy.ndarray), refs)
            cls = self._callable_digest(type(value), refs)
            return digest_of(b"A" + base + cls + self.digest(state, refs))
        return self.array_digest(value, refs)

    def array_digest(self, array: Any, refs: list | None = None) -> bytes:
        """dtype, shape, layout and memory of an exact ``numpy.ndarray``."""
        dtype = array.dtype
        kind = repr(dtype.descr) if dtype.fields is not None else dtype.str
        if array.flags.c_contiguous:
            layout = "C"
        elif array.flags.f_contiguous:
            layout = "F"
        else:
            layout = f"S{array.strides}"
        head = f"a{kind}|{array.shape}|{layout}".encode()
        if dtype.hasobject:
            return digest_of(head + self.digest(array.tolist(), refs))
        if layout != "C" and layout != "F":
            return digest_of(head + self._strided(array))
        flat = array.ravel(order="K").view("u1")  # a view: C or F memory order
        hasher = xxh3_128(head)
        hasher.update(flat)
        return hasher.digest()

    @staticmethod
    def _strided(array: Any) -> bytes:
        """A non-contiguous view's content in C order, streamed into one hash."""
        import numpy

        hasher = xxh3_128(b"strided")
        if array.ndim == 0 or array.size == 0:
            hasher.update(numpy.ascontiguousarray(array).view("u1").ravel())
        else:
            _feed(hasher, array, numpy)
        return hasher.digest()

    def _pandas(self, value: Any, pandas: Any, refs: list | None) -> bytes:
        from pandas.util import hash_pandas_object

        head = [type(value).__qualname__, value.shape]
        if isinstance(value, pandas.Index):
            head += [self._dtype(value.dtype, refs), list(value.names)]
            rows = hash_pandas_object(value, categorize=True)
        else:
            head.append(self._pandas(value.index, pandas, refs))
            if isinstance(value, pandas.DataFrame):
                head.append(self._pandas(value.columns, pandas, refs))
                head.append([self._dtype(dtype, refs) for dtype in value.dtypes])
            else:
                head += [self._dtype(value.dtype, refs), value.name]
            rows = hash_pandas_object(value, index=False, categorize=True)
            if value.attrs:
                head.append(dict(value.attrs))
        hasher = xxh3_128(self.digest(head, refs))
        hasher.update(rows.to_numpy())
        return hasher.digest()

    def _dtype(self, dtype: Any, refs: list | None) -> Any:
        categories = getattr(dtype, "categories", None)
        if categories is not None:  # a CategoricalDtype: its categories and order
            return (str(dtype), self.digest(list(categories), refs), bool(dtype.ordered))
        return str(dtype)

    def _dask_node(self, node: Any, refs: list | None) -> bytes:
        """A Dask graph node held as data (a fused task's subgraph): by structure, not by
        its pickle, which carries lazily filled caches (``_token``, ``_repr``)."""
        name = type(node).__name__
        rename = self._renames[-1] if self._renames else {}
        if name in ("TaskRef", "Alias") or hasattr(node, "__dask_future__"):
            key = getattr(node, "target", None) if name == "Alias" else getattr(node, "key", None)
            content = self.digest(rename.get(key, key) if _hashable(key) else key, refs)
            return digest_of(b"dask " + name.encode() + content)
        if hasattr(node, "func") and hasattr(node, "args") and hasattr(node, "kwargs"):
            func = self._callable_digest(node.func, refs)
            content = self.digest([list(node.args), dict(node.kwargs)], refs)
            return digest_of(b"dask " + name.encode() + func + content)
        if hasattr(node, "value"):  # a DataNode
            return digest_of(b"dask " + name.encode() + self.digest(node.value, refs))
        return self._pickled(node, refs)

    def subgraph_digest(self, inner: dict, outkey: Any, inkeys: Any) -> bytes:
        """A fused Dask task's subgraph (``_execute_subgraph(inner, outkey, inkeys, ...)``)
        with its keys renamed by position: the inner keys by their order, the outer
        ones by their place in ``inkeys``.  Dask names some of them at random per
        compute (``finalize-hlgfinalizecompute-…``); the wiring is what counts."""
        rename = {key: ("inner", i) for i, key in enumerate(inner)}
        for i, key in enumerate(inkeys if isinstance(inkeys, tuple | list) else ()):
            if _hashable(key):
                rename.setdefault(key, ("outer", i))
        self._renames.append(rename)
        try:
            items = [[rename[key], node] for key, node in inner.items()]
            out = rename.get(outkey, outkey) if _hashable(outkey) else outkey
            return digest_of(b"subgraph" + self.digest([items, out, len(rename)]))
        finally:
            self._renames.pop()

    # -- everything else ---------------------------------------------------------

    def _pickled(self, value: Any, refs: list | None) -> bytes:
        first = self._pickle_once(value, refs)
        second = self._pickle_once(value, [] if refs is not None else None)
        if first != second:
            raise Uncacheable(f"{_describe(value)} whose pickle is not deterministic")
        return first

    def _pickle_once(self, value: Any, refs: list | None) -> bytes:
        stream = io.BytesIO()
        buffers: list[bytes] = []
        pickler = _HashPickler(stream, self, refs, buffers)
        try:
            pickler.dump(value)
        except _UnsafePart as exc:
            raise Uncacheable(f"{_describe(value)} holding {exc}") from None
        except Uncacheable:
            raise
        except RecursionError:
            raise Uncacheable(f"{_describe(value)} nested too deeply to pickle") from None
        except Exception as exc:
            raise Uncacheable(
                f"{_describe(value)} that cannot be pickled ({type(exc).__name__}: {exc})"
            ) from None
        hasher = xxh3_128(b"p")
        hasher.update(stream.getbuffer())
        for buffer_digest in buffers:
            hasher.update(buffer_digest)
        return hasher.digest()


_dask_node_types: dict[type, bool] = {}


def _is_dask_node(typ: type) -> bool:
    known = _dask_node_types.get(typ)
    if known is None:
        known = any(c.__name__ in ("GraphNode", "TaskRef") for c in typ.__mro__)
        _dask_node_types[typ] = known
    return known


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _pairs(mapping: dict):
    for key, value in mapping.items():
        yield key
        yield value


def _feed(hasher: Any, array: Any, numpy: Any) -> None:
    """Hash ``array``'s bytes in C order (``ascontiguousarray(array)``'s, whatever the
    pieces): a contiguous block in place; rows of at least ``_ROW_MIN`` bytes that are
    contiguous in place, one by one; anything else copied ``_PIECE`` bytes at a time
    into one reused buffer, small enough to stay in the core's cache between the copy
    and the hash (16 MB pieces went out to memory and back: 2x slower)."""
    if array.flags.c_contiguous:
        hasher.update(array.reshape(-1).view("u1"))
        return
    rows = array.shape[0]
    row_bytes = array.nbytes // rows
    if array.ndim > 1 and (
        row_bytes >= _PIECE or (row_bytes >= _ROW_MIN and array[0].flags.c_contiguous)
    ):
        for i in range(rows):
            _feed(hasher, array[i], numpy)
        return
    step = max(1, _PIECE // row_bytes)
    buffer = numpy.empty((min(step, rows), *array.shape[1:]), array.dtype)
    for start in range(0, rows, step):
        part = array[start : start + step]
        out = buffer[: len(part)]
        numpy.copyto(out, part)
        hasher.update(out.reshape(-1).view("u1"))


def _stand_in(kind: str, digest: bytes) -> tuple[str, bytes]:
    """What a function, class or array is replaced by in a hashing pickle (never loaded)."""
    return kind, digest


class _HashPickler(pickle.Pickler):
    """A pickler for hashing only: code by its print, arrays by their digest, buffers
    out-of-band (hashed where they are), and a clear refusal for what is unsafe."""

    def __init__(self, stream: io.BytesIO, printer: ValuePrinter, refs, buffers: list):
        super().__init__(stream, protocol=5, buffer_callback=self._buffer)
        self._printer = printer
        self._refs = refs
        self._buffers = buffers

    def _buffer(self, buffer: pickle.PickleBuffer) -> bool:
        with buffer.raw() as raw:
            self._buffers.append(digest_of(raw))
        return False  # out of band: not copied into the stream

    def reducer_override(self, obj: Any) -> Any:
        if obj is _stand_in:
            return NotImplemented
        printer = self._printer
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(obj) is numpy.ndarray:
            return _stand_in, ("array", printer.array_digest(obj, self._refs))
        if isinstance(obj, _FUNCTION_LIKE):
            return _stand_in, ("code", printer._callable_digest(obj, self._refs))
        if isinstance(obj, types.ModuleType):
            return _stand_in, ("module", printer._module_digest(obj))
        kind = unsafe_kind(obj)
        if kind is not None:
            raise _UnsafePart(kind)
        return NotImplemented


class _UnsafePart(Uncacheable):
    """Something unsafe found inside a value being pickled."""
