"""nnbook imports and nnbook.claim logs where there is no fcntl (Windows): the claims log is locked with filelock."""
import json
import os
import subprocess
import sys
import textwrap

_NO_FCNTL = textwrap.dedent("""
    import sys
    assert "fcntl" not in sys.modules, "fcntl was imported before the test could hide it"
    sys.modules["fcntl"] = None          # from here on `import fcntl` raises ImportError, as on Windows
    import nnbook
    try:
        import fcntl
    except ImportError:
        pass
    else:
        raise SystemExit("fcntl is still importable")
    nnbook.claim("no-fcntl", 0.95, lower=0.9, text="logged without fcntl", display=False)
    nnbook.claim("no-fcntl-2", 3, upper=4, unit="points", display=False)
    import filelock
    print("imported; lock class", filelock.FileLock.__name__)
""")


def test_import_and_claim_log_without_fcntl(tmp_path):
    log = tmp_path / "claims.jsonl"
    env = dict(os.environ, NNBOOK_CLAIM_LOG=str(log), NNBOOK_NOTEBOOK="chapters/99_no_fcntl.ipynb",
               NNBOOK_CACHE=str(tmp_path / "cache"))
    env.pop("NNBOOK_CLAIM_CONTINUE", None)
    proc = subprocess.run([sys.executable, "-c", _NO_FCNTL], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported; lock class" in proc.stdout
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["no-fcntl", "no-fcntl-2"]
    first = records[0]
    assert first["value"] == 0.95 and first["lower"] == 0.9 and first["upper"] is None and first["ok"] is True
    assert first["text"] == "logged without fcntl" and first["notebook"] == "chapters/99_no_fcntl.ipynb"
    assert records[1]["unit"] == "points" and records[1]["upper"] == 4.0
