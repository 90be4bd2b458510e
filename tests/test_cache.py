"""Cache integrity (issue 16): checksums, damaged entries rebuilt, stale temporaries removed, one builder."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nnbook import cache

ROOT = Path(__file__).resolve().parent.parent
CACHE_PY = str(ROOT / "nnbook" / "cache.py")


def _entry(name="thing", config=None):
    path = cache.cache_dir() / f"{name}-{cache.config_key(config or {'k': 1})}.pt"
    return path, path.with_name(path.name + ".sha256")


def _build_counter(calls, value):
    def build():
        calls.append(1)
        return value
    return build


def test_entry_has_a_sha256_that_matches_its_bytes():
    import hashlib

    cache.cached("thing", {"k": 1}, lambda: {"w": torch.arange(10.0)})
    path, digest = _entry()
    assert digest.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["flip1", "flip4096", "truncate", "empty", "append", "digest"])
def test_damaged_entry_is_detected_and_rebuilt(damage):
    value = {"w": torch.arange(20000.0)}
    calls = []
    cache.cached("thing", {"k": 1}, _build_counter(calls, value))
    path, digest = _entry()
    data = bytearray(path.read_bytes())
    if damage == "flip1":
        data[len(data) // 2] ^= 0x01           # one bit inside the tensor data
    elif damage == "flip4096":
        start = len(data) // 3
        for i in range(start, start + 4096):
            data[i] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage == "append":
        data += b"junk"
    if damage == "digest":
        digest.write_text("0" * 64)
    else:
        path.write_bytes(bytes(data))
    with pytest.raises(cache.CacheCorrupt):
        cache.load_verified(path)
    got = cache.cached("thing", {"k": 1}, _build_counter(calls, value))
    assert torch.equal(got["w"], value["w"]) and len(calls) == 2      # rebuilt, not trusted
    assert torch.equal(cache.load_verified(path)["w"], value["w"])    # and the entry is whole again


def test_entry_without_checksum_is_rebuilt():
    path, digest = _entry()
    torch.save(41, path)               # e.g. written by an older nnbook: no checksum to verify
    assert cache.cached("thing", {"k": 1}, lambda: 42) == 42
    assert digest.exists() and cache.load_verified(path) == 42


def test_stale_temporaries_are_cleaned():
    folder = cache.cache_dir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)       # a process that has exited
    stale = folder / f".thing-x.pt.{dead_pid}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    old = folder / f".other.pt.{os.getpid()}.def456.tmp"   # our own pid, but older than the limit
    old.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * cache.STALE_AFTER_S,) * 2)
    live = folder / f".live.pt.{os.getpid()}.ghi789.tmp"    # a write in progress in this process
    live.write_bytes(b"z")
    unrelated = folder / "notes.txt"
    unrelated.write_text("keep me")
    cache.cached("thing", {"k": 1}, lambda: 1)
    assert not stale.exists() and not old.exists() and live.exists() and unrelated.exists()


_KILLED_WRITER = textwrap.dedent("""
    import importlib.util, os, pickle, sys, time
    spec = importlib.util.spec_from_file_location("cache", {cache_py!r})   # nnbook.cache alone: quick to start
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    cache._serialize, cache._deserialize = pickle.dumps, pickle.loads      # no torch import in the child

    def stalled_write(data, path):
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{{path.name}}.{{os.getpid()}}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            print("WRITING", flush=True)
            time.sleep(60)        # killed here

    cache._atomic_write_bytes = stalled_write
    cache.cached("thing", {{"k": 1}}, lambda: {{"w": list(range(100000))}})
""")


def test_killed_writer_leaves_no_entry_no_lock_and_no_lasting_temporary(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER.format(cache_py=CACHE_PY))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        folder = cache.cache_dir()
        assert [p for p in folder.iterdir() if p.name.endswith(".tmp")]   # the partial file is there
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    path, digest = _entry()
    assert not path.exists() and not digest.exists()     # nothing half-written was published
    t0 = time.time()
    assert cache.cached("thing", {"k": 1}, lambda: "fresh") == "fresh"   # the lock died with the writer
    assert time.time() - t0 < 10
    assert not [p for p in cache.cache_dir().iterdir() if p.name.endswith(".tmp")]   # cleaned up


_BUILDER = textwrap.dedent("""
    import importlib.util, os, pickle, sys, time
    spec = importlib.util.spec_from_file_location("cache", {cache_py!r})   # nnbook.cache alone: quick to start
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    cache._serialize, cache._deserialize = pickle.dumps, pickle.loads      # no torch import in the child

    def build():
        with open({log!r}, "a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        time.sleep(1.0)           # a slow build: the others arrive while it runs
        return {{"answer": 42}}

    print(cache.cached("shared", {{"k": 1}}, build)["answer"])
""")


def test_concurrent_builders_build_once(tmp_path):
    log = tmp_path / "builds.log"
    script = tmp_path / "builder.py"
    script.write_text(_BUILDER.format(cache_py=CACHE_PY, log=str(log)))
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["42"] * 3
    assert len(log.read_text().splitlines()) == 1     # one build; the other two waited and read it


def test_cache_dir_that_is_a_file_and_bad_arguments(tmp_path, monkeypatch):
    bad = tmp_path / "file"
    bad.write_text("x")
    monkeypatch.setenv("NNBOOK_CACHE", str(bad))
    with pytest.raises(NotADirectoryError, match="cache_dir: .*not a folder"):
        cache.cached("x", {}, lambda: 1)
    monkeypatch.setenv("NNBOOK_CACHE", str(tmp_path / "ok"))
    with pytest.raises(ValueError, match="cached: name"):
        cache.cached("", {}, lambda: 1)
    with pytest.raises(ValueError, match="cached: name"):
        cache.cached(".hidden", {}, lambda: 1)
    with pytest.raises(TypeError, match="cached: build"):
        cache.cached("x", {}, None)
    with pytest.raises(TypeError, match="cached: refresh"):
        cache.cached("x", {}, lambda: 1, refresh="yes")
    with pytest.raises(TypeError, match="config_key: config must be a dict"):
        cache.cached("x", [1], lambda: 1)
    with pytest.raises(ValueError, match="NaN"):
        cache.config_key({"lr": float("nan")})


def test_refresh_rebuilds_and_failed_build_keeps_old_entry():
    calls = []
    cache.cached("thing", {"k": 1}, _build_counter(calls, 1))
    assert cache.cached("thing", {"k": 1}, _build_counter(calls, 2), refresh=True) == 2 and len(calls) == 2

    def boom():
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        cache.cached("thing", {"k": 1}, boom, refresh=True)
    assert cache.cached("thing", {"k": 1}, boom) == 2      # the old entry is intact and still valid
