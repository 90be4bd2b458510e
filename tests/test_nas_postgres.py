"""A study shared by several worker processes through a REAL PostgreSQL server.

The fixture starts a throw-away PostgreSQL cluster (Debian's ``postgresql`` package:
``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/*/bin``) in a temporary folder,
listening on 127.0.0.1 and a free port, and removes it afterwards.  PostgreSQL
refuses to run as root, so under root (as in CI) the server runs as the
``postgres`` user.  Without the binaries (or the Python driver) the test is skipped
with a message saying what to install.
"""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import nnbook.nas as nas


def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): install them with "
                    "`apt-get install -y postgresql` to run this test")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install \"psycopg[binary]\"")
    as_root = os.geteuid() == 0
    if as_root:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root but there is no 'postgres' user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        prefix = []
    base = tempfile.mkdtemp(prefix="nnbook-pg-", dir="/tmp")
    data, log = os.path.join(base, "data"), os.path.join(base, "server.log")
    if as_root:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    port = _free_port()

    def run(*args):
        return subprocess.run(prefix + list(args), check=True, capture_output=True, text=True, timeout=120)

    try:
        run(os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        run(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-p {port} -h 127.0.0.1 -k {base} -c fsync=off", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_workers_share_a_postgresql_study(postgres_url):
    n_workers, per_worker = 3, 12
    t0 = time.perf_counter()
    study = nas.run_workers(postgres_url, "nnbook-ch3-test", n_workers=n_workers,
                            trials_per_worker=per_worker, seed=5)
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(n_workers * per_worker)), numbers  # none lost, none duplicated
    assert all(t.state.name == "COMPLETE" for t in trials), [t.state for t in trials]
    pids = [t.user_attrs["pid"] for t in trials]
    assert len(set(pids)) == n_workers and all(pids.count(p) == per_worker for p in set(pids)), pids
    best = nas.load_bench().val_acc(nas.Arch(**study.best_params))
    assert abs(best - study.best_value) < 1e-12, (best, study.best_value)
    assert time.perf_counter() - t0 < 120


def test_existing_study_name_is_refused(postgres_url):
    nas.run_workers(postgres_url, "nnbook-ch3-dup", n_workers=1, trials_per_worker=1)
    with pytest.raises(ValueError, match="exists already"):
        nas.run_workers(postgres_url, "nnbook-ch3-dup", n_workers=1, trials_per_worker=1)
