"""mnemo-local end to end: files written by numpy, imported, searched, checked
against numpy's brute force; bad files fail cleanly and import nothing."""
import os
import subprocess

import numpy as np
import pytest


def write_fvecs(path, x):
    x = np.asarray(x, dtype=np.float32)
    rows = np.hstack([np.full((len(x), 1), x.shape[1], dtype=np.int32).view(np.float32), x])
    rows.tofile(path)


def read_ivecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:]


@pytest.fixture
def tool(build_dir, tmp_path):
    exe = str(build_dir / "tools" / "mnemo-local")
    data = str(tmp_path / "data")

    def run(*args, check=True):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        p = subprocess.run([exe, "--data-dir", data, *map(str, args)], capture_output=True,
                           text=True, env=env)
        if check:
            assert p.returncode == 0, p.stderr
        return p

    return run


def clustered(n, dim, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, dim)).astype(np.float32) * 3
    return centres[rng.integers(0, 32, n)] + rng.normal(size=(n, dim)).astype(np.float32)


def test_import_then_search_matches_numpy_brute_force(tool, tmp_path):
    base, queries = clustered(5000, 32, 1), clustered(50, 32, 2)
    write_fvecs(tmp_path / "base.fvecs", base)
    write_fvecs(tmp_path / "q.fvecs", queries)
    tool("create", "docs", "--dim", 32)
    out = tool("import", "docs", tmp_path / "base.fvecs", "--batch", 700).stdout
    assert "imported 5000 entries" in out
    tool("search", "docs", tmp_path / "q.fvecs", "--k", 5, "--out", tmp_path / "ids.ivecs")
    got = read_ivecs(tmp_path / "ids.ivecs")
    d2 = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    want = np.argsort(d2, axis=1)[:, :5]
    assert got.shape == (50, 5)
    np.testing.assert_array_equal(got, want)


def test_entries_survive_reopen_and_delete(tool, tmp_path):
    base = clustered(300, 8, 3)
    write_fvecs(tmp_path / "b.fvecs", base)
    tool("create", "m", "--dim", 8, "--index", "HNSW16")
    tool("import", "m", tmp_path / "b.fvecs", "--start-id", 1000)
    assert "count=300" in tool("stats", "m").stdout
    assert "deleted 2 entries" in tool("delete", "m", 1000, 1001, 5).stdout
    assert "count=298" in tool("stats", "m").stdout
    got = tool("get", "m", 1002).stdout
    assert got.startswith("1002 ")
    first = float(got.split("[")[1].split(",")[0])
    assert first == pytest.approx(base[2, 0], rel=1e-6)


def test_truncated_file_fails_cleanly(tool, tmp_path):
    write_fvecs(tmp_path / "b.fvecs", clustered(100, 8, 4))
    with open(tmp_path / "b.fvecs", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "b.fvecs") - 3)
    tool("create", "t", "--dim", 8)
    p = tool("import", "t", tmp_path / "b.fvecs", "--batch", 1000, check=False)
    assert p.returncode == 1
    assert "record 99 is truncated" in p.stderr
    assert "count=0" in tool("stats", "t").stdout  # one batch: nothing partial


def test_wrong_dimension_and_unknown_names_fail(tool, tmp_path):
    write_fvecs(tmp_path / "b.fvecs", clustered(10, 8, 5))
    tool("create", "w", "--dim", 16)
    p = tool("import", "w", tmp_path / "b.fvecs", check=False)
    assert p.returncode == 1 and "has dimension 8, collection 'w' has 16" in p.stderr
    p = tool("stats", "nope", check=False)
    assert p.returncode == 1 and "no collection named 'nope'" in p.stderr
    p = tool("import", "w", tmp_path / "missing.fvecs", check=False)
    assert p.returncode == 1 and "cannot open" in p.stderr
    assert tool("frobnicate", check=False).returncode == 2
