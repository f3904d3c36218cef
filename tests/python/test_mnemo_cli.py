"""The mnemo command-line tool against a real mnemod: files written by numpy
or by hand, imported, searched, checked against numpy's brute force; bad
input fails with one clear message, a non-zero exit, and nothing partial."""
import json
import os
import pathlib
import subprocess
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_fvecs(path, x):
    x = np.asarray(x, dtype=np.float32)
    rows = np.hstack([np.full((len(x), 1), x.shape[1], dtype=np.int32).view(np.float32), x])
    rows.tofile(path)


def write_ivecs(path, x):
    x = np.asarray(x, dtype=np.int32)
    np.hstack([np.full((len(x), 1), x.shape[1], dtype=np.int32), x]).tofile(path)


def read_ivecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    return raw.reshape(-1, raw[0] + 1)[:, 1:]


@pytest.fixture
def tool(build_dir, daemon, tmp_path):
    exe = str(build_dir / "tools" / "mnemo")

    def run(*args, check=True):
        # In tmp_path, where import keeps its resume state.
        p = subprocess.run([exe, "--addr", daemon.address, *map(str, args)],
                           capture_output=True, text=True, cwd=tmp_path)
        if check:
            assert p.returncode == 0, p.stderr
        return p

    return run


def clustered(n, dim, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, dim)).astype(np.float32) * 3
    return centres[rng.integers(0, 32, n)] + rng.normal(size=(n, dim)).astype(np.float32)


def brute_force(base, queries, k):
    d2 = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(d2, axis=1)[:, :k]


def test_import_then_search_matches_numpy_brute_force(tool, tmp_path):
    base, queries = clustered(5000, 32, 1), clustered(50, 32, 2)
    write_fvecs(tmp_path / "base.fvecs", base)
    write_fvecs(tmp_path / "q.fvecs", queries)
    tool("create", "docs", "--dim", 32)
    assert "imported 5000 entries" in tool("import", "docs", tmp_path / "base.fvecs",
                                           "--batch", 700).stdout
    tool("search", "docs", tmp_path / "q.fvecs", "--k", 5, "--out", tmp_path / "ids.ivecs")
    np.testing.assert_array_equal(read_ivecs(tmp_path / "ids.ivecs"),
                                  brute_force(base, queries, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_npy_import_reads_the_same_vectors(tool, tmp_path, dtype):
    x = clustered(300, 8, 3).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    tool("create", "n", "--dim", 8)
    tool("import", "n", tmp_path / "x.npy", "--start-id", 1000)
    got = tool("get", "n", 1000, 1299).stdout.splitlines()
    assert [line.split()[0] for line in got] == ["1000", "1299"]
    last = [float(v) for v in got[1].split("[")[1].rstrip("]").split(",")]
    np.testing.assert_array_equal(np.array(last, np.float32), x[299].astype(np.float32))


def test_jsonl_carries_ids_groups_and_text(tool, tmp_path):
    with open(tmp_path / "c.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps({"id": 100 + i, "vector": [i, 0, 0], "group": i % 2,
                                "text": f"chunk {i}"}) + "\n")
    tool("create", "j", "--dim", 3)
    tool("import", "j", tmp_path / "c.jsonl")
    got = tool("get", "j", 105).stdout
    assert got.startswith("105 group=1 payload=7 bytes vector=[5, 0, 0]")
    write_fvecs(tmp_path / "q.fvecs", np.array([[0, 0, 0]], np.float32))
    out = tool("search", "j", tmp_path / "q.fvecs", "--k", 2, "--group", 1).stdout
    assert [t.split(":")[0] for t in out.split()] == ["101", "103"]
    # A negative id is named as written, not as its 64-bit wrap-around.
    with open(tmp_path / "neg.jsonl", "w") as f:
        f.write(json.dumps({"id": 1, "vector": [1, 0, 0]}) + "\n")
        f.write(json.dumps({"id": -1, "vector": [2, 0, 0]}) + "\n")
    bad = tool("import", "j", tmp_path / "neg.jsonl", check=False)
    assert bad.returncode == 1 and "has id -1: an integer in 0..2^63-1 is expected" in bad.stderr
    assert "18446744073709551615" not in bad.stderr


def test_bench_prints_recall_qps_and_latency(tool, tmp_path):
    base, queries = clustered(2000, 16, 4), clustered(40, 16, 5)
    write_fvecs(tmp_path / "b.fvecs", base)
    write_fvecs(tmp_path / "q.fvecs", queries)
    write_ivecs(tmp_path / "gt.ivecs", brute_force(base, queries, 10))
    tool("create", "b", "--dim", 16)
    tool("import", "b", tmp_path / "b.fvecs")
    out = tool("bench", "b", tmp_path / "q.fvecs", "--gt", tmp_path / "gt.ivecs",
               "--clients", 4, "--seconds", 1).stdout
    assert out.startswith("recall@10 1.0000  qps ")
    assert " p50 " in out and " p99 " in out


def test_truncated_file_fails_cleanly(tool, tmp_path):
    write_fvecs(tmp_path / "b.fvecs", clustered(100, 8, 4))
    with open(tmp_path / "b.fvecs", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "b.fvecs") - 3)
    tool("create", "t", "--dim", 8)
    p = tool("import", "t", tmp_path / "b.fvecs", "--batch", 10, check=False)
    assert p.returncode == 1
    assert "record 99 is truncated" in p.stderr
    assert "count=0" in tool("stats", "t").stdout  # found before the first batch

    np.save(tmp_path / "b.npy", clustered(100, 8, 4))
    with open(tmp_path / "b.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "b.npy") - 3)
    p = tool("import", "t", tmp_path / "b.npy", "--batch", 10, check=False)
    assert p.returncode == 1 and "is truncated" in p.stderr
    assert "count=0" in tool("stats", "t").stdout


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
    assert "count=0" in tool("stats", "w").stdout


def test_unreachable_daemon_is_a_clear_error(build_dir):
    p = subprocess.run([str(build_dir / "tools" / "mnemo"), "--addr", "127.0.0.1:1", "list"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "Unavailable: cannot connect to 127.0.0.1:1" in p.stderr


def test_hdf5_ann_benchmarks_layout(tool, tmp_path):
    import h5py  # installed by tools/install_deps.sh; missing means a broken setup
    base, queries = clustered(1000, 12, 6), clustered(20, 12, 7)
    with h5py.File(tmp_path / "ann.hdf5", "w") as f:
        f["train"] = base.astype(np.float64)   # any float type is converted
        f["test"] = queries
    tool("create", "h", "--dim", 12)
    assert "imported 1000 entries" in tool("import", "h", tmp_path / "ann.hdf5",
                                           "--batch", 300).stdout
    write_fvecs(tmp_path / "q.fvecs", queries)
    tool("search", "h", tmp_path / "q.fvecs", "--k", 3, "--out", tmp_path / "ids.ivecs")
    np.testing.assert_array_equal(read_ivecs(tmp_path / "ids.ivecs"),
                                  brute_force(base, queries, 3))
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        f["vectors"] = base
    p = tool("import", "h", tmp_path / "bad.hdf5", check=False)
    assert p.returncode == 1 and "has no dataset 'train'" in p.stderr


def count(tool, name):
    out = tool("stats", name).stdout
    return int(out.split("count=")[1].split()[0])


def test_killed_import_resumes_to_exactly_the_files_entries(build_dir, daemon, tool, tmp_path):
    n, dim = 200_000, 16
    base = clustered(n, dim, 6)
    write_fvecs(tmp_path / "big.fvecs", base)
    tool("create", "r", "--dim", dim)
    state = tmp_path / ".mnemo-import-r.state"
    # Small batches, each acknowledged and recorded: the kill lands midway.
    p = subprocess.Popen([str(build_dir / "tools" / "mnemo"), "--addr", daemon.address, "import",
                          "r", str(tmp_path / "big.fvecs"), "--batch", "200"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = 0
    while p.poll() is None and rows < 20_000:
        try:
            rows = int(state.read_text().split("rows ")[1].split()[0])
        except (FileNotFoundError, IndexError):
            pass
    p.kill()
    p.wait()
    assert rows >= 20_000, "the import finished before it could be killed"
    # The daemon still applies the batches it had read before the kill.
    stored, settled = count(tool, "r"), 0
    while settled < 3:
        time.sleep(0.1)
        now = count(tool, "r")
        stored, settled = now, (settled + 1 if now == stored else 0)
    assert rows <= stored < n

    # Another file's import refuses the state rather than skipping rows.
    write_fvecs(tmp_path / "other.fvecs", base[:10])
    other = tool("import", "r", tmp_path / "other.fvecs", "--resume", check=False)
    assert other.returncode == 1 and "run without --resume" in other.stderr
    assert count(tool, "r") == stored

    out = tool("import", "r", tmp_path / "big.fvecs", "--batch", 5000, "--resume")
    assert "resuming after" in out.stderr
    assert count(tool, "r") == n
    assert not state.exists()
    from mnemo import Client
    c = Client(daemon.address)
    probe = np.array([0, rows - 1, rows, stored, n - 1], dtype=np.uint64)
    got = c.get("r", probe)
    assert list(got.ids) == list(probe)
    np.testing.assert_array_equal(got.vectors, base[probe.astype(np.int64)])


def test_import_memory_stays_flat(build_dir, daemon, tool, tmp_path):
    n, dim = 300_000, 128  # a 155 MB file
    rng = np.random.default_rng(3)
    write_fvecs(tmp_path / "m.fvecs", rng.normal(size=(n, dim)).astype(np.float32))
    tool("create", "m", "--dim", dim)
    p = subprocess.Popen([str(build_dir / "tools" / "mnemo"), "--addr", daemon.address, "import",
                          "m", str(tmp_path / "m.fvecs"), "--batch", "2000"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # VmHWM: the peak resident size since exec (ru_maxrss would also count
    # this test's own pages, shared with the child between fork and exec).
    peak_kb = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
    assert p.wait() == 0, p.stderr.read()
    assert count(tool, "m") == n
    assert 0 < peak_kb < 60 * 1024, f"mnemo import peaked at {peak_kb // 1024} MB for a 155 MB file"


def test_backup_during_writes_restores_every_acknowledged_entry(daemon, daemon_factory, tool,
                                                               tmp_path):
    import threading
    import time
    from mnemo import Client

    def vectors(ids):
        ids = ids.astype(np.float32)[:, None]
        return np.hstack([ids, ids % 7, -ids, np.ones_like(ids)]).astype(np.float32)

    Client(daemon.address).create_collection("b", 4, index="HNSW16")
    acked = [0]  # every id below acked[-1] is acknowledged
    stop = threading.Event()

    def writer():
        w = Client(daemon.address)
        while not stop.is_set():
            ids = np.arange(acked[-1], acked[-1] + 200, dtype=np.uint64)
            w.upsert("b", ids, vectors(ids))
            acked.append(acked[-1] + 200)

    t = threading.Thread(target=writer)
    t.start()
    try:
        while acked[-1] < 4000 and t.is_alive():
            time.sleep(0.001)
        before = acked[-1]
        out = tool("backup", "bk").stdout  # relative: made absolute by mnemo
        assert f"backed up into '{tmp_path / 'bk'}'" in out
        while acked[-1] < before + 2000 and t.is_alive():  # writes went on meanwhile
            time.sleep(0.001)
    finally:
        stop.set()
        t.join()

    again = tool("backup", tmp_path / "bk", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    assert acked[-1] >= before + 2000, "the writer stopped early"
    restored = tool("restore", tmp_path / "bk", "--data-dir", tmp_path / "restored").stdout
    assert "b: dim=4" in restored
    d2 = daemon_factory(tmp_path / "restored")
    c2 = Client(d2.address)
    want = np.arange(before, dtype=np.uint64)
    got = c2.get("b", want)
    assert len(got.ids) == before
    np.testing.assert_array_equal(got.vectors, vectors(want))
    assert before <= c2.stats("b").count <= acked[-1]
    _, ids = c2.search("b", vectors(np.array([17], dtype=np.uint64)), k=1)
    assert ids[0][0] == 17

    busy = tool("restore", tmp_path / "bk", "--data-dir", tmp_path / "restored", check=False)
    assert busy.returncode == 1 and "is not empty" in busy.stderr
    (tmp_path / "junk").mkdir()
    junk = tool("restore", tmp_path / "junk", "--data-dir", tmp_path / "r2", check=False)
    assert junk.returncode == 1 and "is not a mnemo backup" in junk.stderr


def test_sample_corpus_script_chunks_embeds_imports_and_finds_text(tool, daemon, tmp_path):
    script = ROOT / "tools" / "make_corpus.py"
    src = tmp_path / "texts"
    src.mkdir()
    (src / "quotes").write_text("Computers are useless. They can only give you answers.\n%\n"
                                "A penny saved is a penny earned.\n%\n"
                                "The early bird catches the worm.\n%\n"
                                "Time flies like an arrow; fruit flies like a banana.\n%\n")
    (src / "essay.txt").write_text("First paragraph about storage engines and logs.\n\n"
                                   "Second paragraph about vector search and graphs.\n")

    def make(out):
        subprocess.run(["/usr/bin/python3", str(script), "--out", str(out), "--dim", "64",
                        "--max-chars", "60", str(src)], check=True, capture_output=True)
        return [json.loads(line) for line in open(out)]

    records = make(tmp_path / "c.jsonl")
    assert make(tmp_path / "again.jsonl") == records  # deterministic
    texts = [r["text"] for r in records]
    assert "A penny saved is a penny earned." in texts  # one fortune per chunk
    assert any(t.startswith("First paragraph") for t in texts)  # paragraphs, too long to join
    assert [r["id"] for r in records] == list(range(len(records)))
    assert len({r["group"] for r in records}) == 2  # one group per source file
    for r in records:
        assert len(r["vector"]) == 64
        assert abs(np.linalg.norm(r["vector"]) - 1) < 1e-5

    tool("create", "corpus", "--dim", 64, "--metric", "cosine")
    assert f"imported {len(records)} entries" in tool("import", "corpus", tmp_path / "c.jsonl").stdout
    q = subprocess.run(["/usr/bin/python3", str(script), "--query", "a penny saved",
                        "--collection", "corpus", "--addr", daemon.address, "--dim", "64", "--k", "2"],
                       check=True, capture_output=True, text=True).stdout
    assert "A penny saved is a penny earned." in q.splitlines()[0]


def test_create_sets_hnsw_ef_construction_and_stats_shows_it(tool):
    tool("create", "g", "--dim", 8, "--index", "HNSW16", "--ef-construction", 200)
    assert "ef_construction=200" in tool("stats", "g").stdout
    bad = tool("create", "g2", "--dim", 8, "--index", "HNSW16", "--ef-construction", 99999, check=False)
    assert bad.returncode == 1 and "ef_construction must be at most 2048" in bad.stderr
    assert "g2" not in tool("list").stdout
