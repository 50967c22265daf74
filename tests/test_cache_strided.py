"""Hashing strided NumPy views (``value_print._feed``): the content in C order, the same
digest however the view is cut into pieces, in small pieces (no 16 MB copies), and no
copy at all for contiguous rows; content, shape, dtype and order all count."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from xxhash import xxh3_128

from notebook_sched.cache.code_print import CodePrinter

MB = 1 << 20


def digest(value) -> bytes:
    return CodePrinter().values.digest(value)


def reference(view: np.ndarray) -> bytes:
    """What a strided view's digest is made of: its header and its C-order bytes."""
    kind = repr(view.dtype.descr) if view.dtype.fields is not None else view.dtype.str
    head = f"a{kind}|{view.shape}|S{view.strides}".encode()
    content = xxh3_128(b"strided")
    content.update(np.ascontiguousarray(view).view("u1").ravel())
    return xxh3_128(head + content.digest()).digest()


def views():
    rng = np.random.default_rng(1)
    big = rng.random((64, 40_000))  # rows of 320 KB: over a piece
    yield "every other element", rng.random(300_000)[::2]
    yield "every other column", rng.random((5000, 40)).reshape(-1, 2)[:, 0]
    yield "short contiguous rows", rng.random((3000, 50))[:, :30]
    yield "long contiguous rows", big[:, :20_000]
    yield "long strided rows", big[:, ::2]
    yield "3-D, middle axis sliced", rng.random((6, 50, 4000))[:, ::3, :]
    yield "transposed", rng.random((700, 90)).T
    yield "structured", np.zeros(5000, dtype=[("a", "i4"), ("b", "f8")])[::3]
    yield "reversed", rng.random(100_000)[::-1]


@pytest.mark.parametrize(("label", "view"), list(views()), ids=[label for label, _ in views()])
def test_a_strided_view_hashes_its_c_order_content(label, view):
    assert not view.flags.c_contiguous or label == "transposed"
    if view.flags.c_contiguous or view.flags.f_contiguous:
        return  # hashed in place as a contiguous array (another test's business)
    assert digest(view) == reference(view)
    changed = view.copy()  # same shape, strides differ (a copy is contiguous)
    assert digest(changed) != digest(view)


def test_a_large_strided_view_is_copied_in_small_pieces_and_contiguous_rows_not_at_all():
    array = np.random.default_rng(2).random((256, 16384))  # 32 MB
    for view, limit in (
        (array.reshape(-1, 2)[:, 0], 1 * MB),  # every other element: small pieces
        (array[:, :8192], 64 << 10),  # rows of 64 KB contiguous, in place
    ):
        tracemalloc.start()
        try:
            digest(view)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < limit, f"{peak} bytes allocated to hash a {view.nbytes}-byte view"


def test_content_shape_dtype_and_order_of_a_strided_view_count():
    array = np.arange(40_000.0).reshape(200, 200)
    view = array[:, ::2]
    first = digest(view)
    assert digest(array.copy()[:, ::2]) == first  # equal content and layout: equal
    others = [
        view.T,  # the transposed view
        np.ascontiguousarray(view.T)[:, :],  # its transposed copy
        array[::2, :],  # same shape, other content
        array.astype("f4")[:, ::2],  # other dtype
        array.reshape(100, 400)[:, ::4],  # other shape, same count
    ]
    assert len({first, *map(digest, others)}) == len(others) + 1
    array[199, 198] = -1.0
    assert digest(view) != first  # mutated in place
