"""Entries of older disk formats (``v1/``, ``NSCACHE1``): never read, removed by
``ns.cache_clear()`` and by the size bound's eviction, but only what the folder's key
signed (and our stale temporary files); anything we cannot prove is ours stays."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import time

import pytest

import notebook_sched as ns
from notebook_sched.cache import disk
from notebook_sched.cache import folder as folders

FIXED = struct.Struct("<IQ")


def write_v1_entry(root: str, key: bytes, digest: bytes, payload: bytes = b"x" * 1000) -> str:
    """A format-1 entry as the old writer laid it out: magic, HMAC tag over magic,
    lengths, header and pickle stream, then the buffers."""
    magic = b"NSCACHE1"
    head = json.dumps({"fingerprint": digest.hex(), "size": 0, "buffers": []}).encode()
    stream = b"\x80\x05K\x01."  # pickle of 1 (never loaded here)
    fixed = FIXED.pack(len(head), len(stream))
    tag = hmac.new(key, magic + fixed + head + stream, hashlib.sha256).digest()
    name = digest.hex()
    path = os.path.join(root, "v1", name[:2], name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "wb") as f:
        f.write(magic + tag + fixed + head + stream + payload)
    return path


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(folders.ENV_DIR, str(tmp_path / "cache"))
    folders.forget_opened()
    path = str(tmp_path / "cache")
    folders.open_folder(path)
    yield path
    folders.forget_opened()


def test_cache_clear_removes_the_old_format_entries_we_signed(root):
    key = folders.open_folder(root).key
    paths = [write_v1_entry(root, key, bytes([n]) * 16) for n in (0xAB, 0xAB - 1, 0x01)]
    old_temp = os.path.join(root, "v1", "ab", ".tmp-xyz")
    with open(old_temp, "wb") as f:
        f.write(b"partial")
    an_hour_ago = time.time() - 2 * disk.STALE_TEMP_SECONDS
    os.utime(old_temp, (an_hour_ago, an_hour_ago))
    current = disk.write_entry(folders.open_folder(root), b"\x02" * 16, list(range(10)))
    assert current > 0
    with ns.config.set(cache="disk"):
        ns.cache_clear()
    assert not any(map(os.path.exists, paths)) and not os.path.exists(old_temp)
    assert not os.path.exists(os.path.join(root, "v1"))  # emptied, so removed
    assert disk.usage(folders.open_folder(root)) == (0, 0)
    assert os.path.exists(os.path.join(root, folders.KEY_NAME))  # the key stays


def test_what_we_cannot_prove_is_ours_stays(root, tmp_path):
    key = folders.open_folder(root).key
    ours = write_v1_entry(root, key, b"\xcd" * 16)
    keep = [
        write_v1_entry(root, b"k" * 32, b"\xce" * 16),  # signed by another key
        write_v1_entry(root, key, b"\xcf" * 16, payload=b""),  # ours, but then:
    ]
    with open(keep[1], "r+b") as f:  # ... its stream changed: the signature fails
        f.seek(60)
        f.write(b"!")
    odd_name = os.path.join(root, "v1", "cd", "notes.txt")
    with open(odd_name, "wb") as f:
        f.write(open(ours, "rb").read())  # our bytes, but not named as an entry is
    fresh_temp = os.path.join(root, "v1", "cd", ".tmp-new")  # a writer may still be busy
    with open(fresh_temp, "wb") as f:
        f.write(b"partial")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / ("cd" + "ef" * 15)
    target.write_bytes(open(ours, "rb").read())
    link = os.path.join(root, "v1", "cd", "cd" + "ef" * 15)
    os.symlink(target, link)  # a link into another folder: never followed
    other_folder = os.path.join(root, "v0")
    os.makedirs(other_folder)
    write_v1_entry(other_folder, key, b"\xab" * 16)  # not a format folder we know
    with ns.config.set(cache="disk"):
        ns.cache_clear()
    assert not os.path.exists(ours)
    assert all(map(os.path.exists, keep)) and os.path.exists(odd_name)
    assert os.path.exists(fresh_temp) and os.path.islink(link) and target.exists()
    assert os.listdir(other_folder) == ["v1"]
    assert os.path.isdir(os.path.join(root, "v1"))  # not empty: it stays


def test_eviction_removes_old_format_entries_first(root):
    folder = folders.open_folder(root)
    old = write_v1_entry(root, folder.key, b"\x10" * 16)
    assert disk.write_entry(folder, b"\x11" * 16, list(range(100))) > 0
    left = disk.evict(folder, max_bytes=1 << 30)  # under the bound: no current entry goes
    assert not os.path.exists(old) and not os.path.exists(os.path.join(root, "v1"))
    assert disk.usage(folder) == (1, left)
