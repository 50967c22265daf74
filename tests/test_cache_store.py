"""The cache's tiers: memory LRU by real size, signed atomic disk entries, the folder.

Pure tests of ``notebook_sched.cache`` storage (no scheduler runs): a disk entry
round-trips arrays without a copy, a tampered or foreign entry is a miss with a
warning and is never unpickled (a tripwire object records any load), both tiers
evict the least recently used entries by size, two processes writing the same
entries at once leave only valid entries, and the folder and key are private.
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from notebook_sched.cache import disk
from notebook_sched.cache import folder as folders
from notebook_sched.cache.disk import CacheWarning, LoadCost
from notebook_sched.cache.memory import MISSING, MemoryTier
from notebook_sched.cache.sizing import memory_size


def record_load(marker: str) -> str:
    """What unpickling a Tripwire calls: leaves a file behind (visible across processes)."""
    with open(marker, "w") as f:
        f.write("loaded")
    return "tripwire"


class Tripwire:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (record_load, (self.marker,))


@pytest.fixture
def folder(tmp_path):
    folders.forget_opened()
    yield folders.open_folder(str(tmp_path / "cache"))
    folders.forget_opened()


def digest_of(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_memory_tier_sizes_by_content_and_evicts_least_recently_used():
    big = np.zeros(1000, dtype="f8")  # 8,000 bytes
    assert 8000 <= memory_size(big) < 8200
    assert memory_size("x" * 5000) >= 5000
    assert memory_size([big, big]) >= 16000
    tier = MemoryTier(max_bytes=20_000)
    for n in range(3):
        assert tier.put(digest_of(n), np.zeros(1000, dtype="f8"))
    assert len(tier) == 2 and tier.get(digest_of(0)) is MISSING  # 0 went first
    tier.get(digest_of(1))  # 1 is now the most recent: 2 goes next
    tier.put(digest_of(3), np.zeros(1000, dtype="f8"))
    assert tier.get(digest_of(2)) is MISSING and tier.get(digest_of(1)) is not MISSING
    assert tier.nbytes <= 20_000
    assert not tier.put(digest_of(9), np.zeros(10_000, dtype="f8"))  # over the budget
    tier.resize(9000)
    assert len(tier) == 1 and tier.nbytes <= 9000


def test_pandas_size_is_its_deep_memory_usage():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"s": ["a string of some length"] * 1000, "x": range(1000)})
    assert memory_size(frame) == int(frame.memory_usage(deep=True).sum())


def test_disk_entry_round_trip_keeps_arrays_writable_and_unchanged(folder):
    big = np.arange(600_000, dtype="f8").reshape(600, 1000)  # 4.8 MB: memory-mapped
    value = {"big": big, "small": np.arange(5), "text": "hi", "n": None}
    written = disk.write_entry(folder, digest_of(1), value, 1.0)
    assert written == os.path.getsize(disk.entry_path(folder, digest_of(1)))
    assert big.nbytes < written < big.nbytes + 4096  # the array once, no second copy
    loaded = disk.read_entry(folder, digest_of(1))
    np.testing.assert_array_equal(loaded["big"], big)
    assert loaded["text"] == "hi" and loaded["n"] is None
    assert loaded["big"].flags.writeable  # copy-on-write: changing it never reaches the file
    loaded["big"][0, 0] = -1
    again = disk.read_entry(folder, digest_of(1))
    assert again["big"][0, 0] == 0
    assert disk.read_entry(folder, digest_of(2)) is disk.MISSING


def test_an_entry_that_cannot_be_pickled_is_not_written(folder):
    import threading

    assert disk.write_entry(folder, digest_of(1), threading.Lock()) == 0
    assert disk.usage(folder) == (0, 0)


def _refused(folder, digest) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert disk.read_entry(folder, digest) is disk.MISSING
    return [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


@pytest.mark.parametrize("where", ["header", "pickle", "buffer", "truncated"])
def test_a_tampered_entry_is_a_miss_with_a_warning_and_never_unpickled(folder, tmp_path, where):
    marker = str(tmp_path / "loaded")
    value = [Tripwire(marker), np.arange(50_000)]
    disk.write_entry(folder, digest_of(7), value)
    path = disk.entry_path(folder, digest_of(7))
    data = bytearray(open(path, "rb").read())
    if where == "truncated":
        data = data[: len(data) // 2]
    else:
        at = {"header": 60, "pickle": data.find(b"record_load"), "buffer": len(data) - 100}[where]
        data[at] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    messages = _refused(folder, digest_of(7))
    assert len(messages) == 1 and path in messages[0], messages
    assert not os.path.exists(marker)  # the tripwire was never unpickled
    assert not os.path.exists(path)  # a bad entry is removed
    # The control: the same entry untouched is loaded, and the tripwire fires.
    disk.write_entry(folder, digest_of(7), value)
    assert disk.read_entry(folder, digest_of(7))[0] == "tripwire" and os.path.exists(marker)


def test_a_foreign_file_without_our_signature_is_never_unpickled(folder, tmp_path):
    marker = str(tmp_path / "loaded")
    stream = pickle.dumps(Tripwire(marker))
    path = disk.entry_path(folder, digest_of(3))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # A plain pickle, and one dressed as our format with a made-up tag.
    for content in (
        stream,
        disk.MAGIC + b"\0" * 32 + disk._FIXED.pack(2, len(stream)) + b"{}" + stream,
    ):
        with open(path, "wb") as f:
            f.write(content)
        messages = _refused(folder, digest_of(3))
        assert messages and not os.path.exists(marker)
    # An entry signed by another folder's key (another user's cache) is foreign too.
    other = folders.open_folder(str(tmp_path / "other"))
    disk.write_entry(other, digest_of(3), Tripwire(marker))
    os.replace(disk.entry_path(other, digest_of(3)), path)
    assert _refused(folder, digest_of(3)) and not os.path.exists(marker)


def test_an_entry_renamed_to_another_fingerprint_is_refused(folder):
    disk.write_entry(folder, digest_of(1), "one")
    target = disk.entry_path(folder, digest_of(2))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(disk.entry_path(folder, digest_of(1)), target)
    assert "another fingerprint" in _refused(folder, digest_of(2))[0]


def test_disk_tier_evicts_least_recently_used_by_size(folder):
    for n in range(6):
        disk.write_entry(folder, digest_of(n), np.zeros(100_000, dtype="u1"))
        os.utime(disk.entry_path(folder, digest_of(n)), (1000 + n, 1000 + n))
    disk.read_entry(folder, digest_of(0))  # a hit makes entry 0 the most recent
    entries, total = disk.usage(folder)
    assert entries == 6
    kept = disk.evict(folder, total // 2)
    assert kept <= total // 2
    present = [n for n in range(6) if os.path.exists(disk.entry_path(folder, digest_of(n)))]
    assert 0 in present and present == [0, *range(6 - len(present) + 1, 6)], present
    disk.clear(folder)
    assert disk.usage(folder) == (0, 0)


def test_account_evicts_when_this_process_estimate_passes_the_bound(folder):
    for n in range(5):
        written = disk.write_entry(folder, digest_of(n), np.zeros(50_000, dtype="u1"))
        disk.account(folder, written, 120_000)
    assert disk.usage(folder)[1] <= 120_000


def test_folder_and_key_are_private_and_a_shared_key_is_refused(tmp_path):
    folders.forget_opened()
    path = str(tmp_path / "deep" / "cache")
    opened = folders.open_folder(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    key_path = os.path.join(path, folders.KEY_NAME)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert len(opened.key) == 32 and "key" not in repr(opened).lower().replace(path, "")
    folders.forget_opened()
    assert folders.open_folder(path).key == opened.key  # read back, not made anew
    os.chmod(key_path, 0o644)
    folders.forget_opened()
    with pytest.raises(folders.FolderError, match="0600"):
        folders.open_folder(path)
    folders.forget_opened()


def test_cache_settings_name_folders(monkeypatch, tmp_path):
    monkeypatch.setenv(folders.ENV_DIR, str(tmp_path / "env"))
    assert folders.folder_for("disk") == str(tmp_path / "env")
    assert folders.folder_for("memory") is None and folders.folder_for(True) is None
    assert folders.folder_for(str(tmp_path / "x")) == str(tmp_path / "x")
    monkeypatch.delenv(folders.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert folders.folder_for("disk") == str(tmp_path / "xdg" / "notebook_sched")
    with pytest.raises(ValueError, match="cache must be"):
        folders.folder_for(3)


def test_a_quick_task_is_not_worth_writing_and_a_slow_one_is():
    cost = LoadCost(fixed=100e-6, per_byte=1e-9)
    assert not cost.worth_writing(10e-6)
    assert cost.worth_writing(0.5, 10_000_000)
    assert not cost.worth_writing(0.005, 100_000_000)  # 5 ms to make, ~0.1 s to load


def test_measured_load_cost_is_plausible(folder):
    cost = disk.measure_load_cost(folder)
    assert 0 < cost.fixed < 0.1 and 0 < cost.per_byte < 1e-6
    assert disk.usage(folder) == (0, 0)  # the probes are gone


def test_the_load_cost_is_kept_in_the_folder_so_a_restart_does_not_probe(folder, monkeypatch):
    first = disk.measure_load_cost(folder)
    kept = os.path.join(folder.path, disk.COST_FILE)
    assert os.path.exists(kept)
    monkeypatch.setattr(disk, "_costs", {})  # a new process on the same folder

    def no_probe(*args):
        raise AssertionError("the disk was probed again")

    monkeypatch.setattr(disk, "_cold_load_seconds", no_probe)
    assert disk.measure_load_cost(folder) == first
    # A damaged or old file is measured again (here: the probe runs, and raises).
    for bad in ("{not json", '{"fixed": -1, "per_byte": 1e-9, "measured": 0}'):
        with open(kept, "w") as f:
            f.write(bad)
        monkeypatch.setattr(disk, "_costs", {})
        with pytest.raises(AssertionError, match="probed again"):
            disk.measure_load_cost(folder)


def test_a_buffer_swapped_for_another_entrys_bytes_is_refused(folder, tmp_path):
    """Buffers are checked by a digest keyed by the folder's key, under the signature:
    the bytes of another valid entry (same length) in place of an array's are refused."""
    disk.write_entry(folder, digest_of(1), np.zeros(100_000))
    disk.write_entry(folder, digest_of(2), np.ones(100_000))
    one, two = (disk.entry_path(folder, digest_of(n)) for n in (1, 2))
    zeros, ones = open(one, "rb").read(), open(two, "rb").read()
    assert len(zeros) == len(ones)
    tail = 800_000  # the array's bytes end each file
    with open(one, "wb") as f:
        f.write(zeros[:-tail] + ones[-tail:])
    assert len(_refused(folder, digest_of(1))) == 1
    other = folders.open_folder(str(tmp_path / "other"))  # another key
    view = memoryview(np.ones(1000).tobytes())
    assert disk._buffer_digest(view, disk._buffer_seed(folder)) != disk._buffer_digest(
        view, disk._buffer_seed(other)
    )


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from notebook_sched.cache import disk, folder
    f = folder.open_folder(sys.argv[1])
    for round in range(3):
        for n in range(20):
            disk.write_entry(f, n.to_bytes(32, 'big'), np.full(200_000, n, dtype='i4'))
    """
)


@pytest.mark.timeout(60)
def test_two_processes_writing_the_same_entries_leave_only_valid_ones(tmp_path):
    path = str(tmp_path / "shared")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, path], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for w in writers:
        _, err = w.communicate(timeout=50)
        assert w.returncode == 0, err.decode()
    folders.forget_opened()
    shared = folders.open_folder(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # a damaged entry would fail here
        for n in range(20):
            loaded = disk.read_entry(shared, digest_of(n))
            assert loaded.shape == (200_000,) and (loaded == n).all()
    leftovers = [name for _, _, names in os.walk(path) for name in names if name.startswith(".tmp")]
    assert leftovers == [] and disk.usage(shared)[0] == 20
    folders.forget_opened()


def test_store_hook_writes_only_what_beats_recomputing_counting_its_inputs(folder):
    from notebook_sched.cache.plan import StoreResult

    cost = LoadCost(fixed=1e-3, per_byte=1e-9)
    quick = StoreResult(digest_of(1), folder.path, cost, None, owner=-1)
    quick("a quick result", 10e-6)  # 10 µs: never written
    assert disk.read_entry(folder, digest_of(1)) is disk.MISSING
    slow = StoreResult(digest_of(2), folder.path, cost, None, owner=-1)
    slow(np.zeros(10), 0.5)
    assert disk.read_entry(folder, digest_of(2)) is not disk.MISSING
    # A quick task made from the slow one: recomputing it means recomputing that too.
    after = StoreResult(digest_of(3), folder.path, cost, None, -1, needs=(digest_of(2),))
    after("derived", 0.001)
    assert disk.read_entry(folder, digest_of(3)) == "derived"
    huge = StoreResult(digest_of(4), folder.path, cost, None, owner=-1)
    huge(np.zeros(50_000_000 // 8), 0.01)  # 50 MB made in 10 ms: loading is slower
    assert disk.read_entry(folder, digest_of(4)) is disk.MISSING
