"""The Python client against a real mnemod on loopback."""
import filecmp
import pathlib
import shutil
import signal
import subprocess
import threading
import urllib.request

import numpy as np
import pytest

import mnemo

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_collection_operation(daemon):
    c = mnemo.Client(daemon.address)
    info = c.create_collection("docs", dim=4, metric="l2", index="Flat")
    assert (info.name, info.dim, info.count) == ("docs", 4, 0)
    ids = np.array([10, 20, 30], dtype=np.uint64)
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert c.upsert("docs", ids, vecs, groups=[1, 2, 1], payloads=[b"a", "bee", b""]) == 3

    e = c.get("docs", [30, 99, 10])
    np.testing.assert_array_equal(e.ids, [30, 10])
    assert e.ids.dtype == np.uint64
    np.testing.assert_array_equal(e.vectors, vecs[[2, 0]])
    np.testing.assert_array_equal(e.groups, [1, 1])
    assert e.payloads == [b"", b"a"]

    D, I = c.search("docs", vecs[1:2] + 0.1, k=2)
    assert D.dtype == np.float32 and I.dtype == np.int64 and I.shape == (1, 2)
    assert list(I[0]) == [20, 30]  # 0.1, then 3.9, then 4.1 per coordinate away
    assert D[0, 0] == pytest.approx(4 * 0.01, rel=1e-4)
    D, I = c.search("docs", vecs, k=3, group=1)
    assert list(I[1]) == [10, 30, -1]

    assert c.delete("docs", [20, 21]) == 1
    assert c.stats("docs").count == 2
    assert [s.name for s in c.list()] == ["docs"]
    c.drop("docs")
    with pytest.raises(mnemo.NotFound, match="no collection named 'docs'"):
        c.stats("docs")


def test_a_search_with_entries_returns_its_hits_vectors_and_payloads_in_one_round_trip(daemon):
    c = mnemo.Client(daemon.address)
    c.create_collection("mem", 4, metric="ip")
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    ids = np.arange(100, 120, dtype=np.uint64)
    c.upsert("mem", ids, vectors, groups=[i % 2 for i in range(20)],
             payloads=[f"value {i}".encode() for i in range(20)])
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    D, I, E = c.search_entries("mem", queries, k=4, group=1)
    assert np.array_equal(I, c.search("mem", queries, k=4, group=1)[1])
    hits = np.unique(I[I >= 0]).astype(np.uint64)
    assert np.array_equal(E.ids, hits)  # each distinct hit once, ascending
    assert np.array_equal(E.vectors, vectors[(hits - 100).astype(int)])
    assert E.payloads == [f"value {int(i) - 100}".encode() for i in hits]
    assert (E.groups == 1).all()
    # Mixed in one pipelined round trip with plain searches.
    plain, with_entries = c.search_many([dict(name="mem", queries=queries, k=2),
                                         dict(name="mem", queries=queries, k=4, group=1, with_entries=True)])
    assert len(plain) == 2 and len(with_entries) == 3
    assert np.array_equal(with_entries[2].ids, E.ids)
    with pytest.raises(mnemo.NotFound):
        c.search_entries("no-such", queries, k=1)


def test_quantized_collection_trains_and_searches(daemon):
    c = mnemo.Client(daemon.address)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    c.create_collection("ivf", dim=16, index="IVF16,PQ4", train_size=500)
    c.upsert("ivf", np.arange(2000), x)
    s = c.stats("ivf")
    assert s.trained and s.count == 2000 and s.epoch == 1
    _, I = c.search("ivf", x[:20], k=10, nprobe=16)
    assert np.mean([i in row for i, row in enumerate(I)]) > 0.8


def test_errors_are_typed_and_carry_the_message(daemon):
    c = mnemo.Client(daemon.address)
    c.create_collection("m", dim=4)
    with pytest.raises(mnemo.AlreadyExists):
        c.create_collection("m", dim=4)
    with pytest.raises(mnemo.InvalidArgument, match=r"dimension 5 does not match collection 'm' \(4\)"):
        c.upsert("m", [1], np.ones((1, 5), np.float32))
    with pytest.raises(mnemo.InvalidArgument, match="NaN"):
        c.upsert("m", [1], np.array([[1, np.nan, 1, 1]], np.float32))
    with pytest.raises(mnemo.OutOfRange, match="k must be in"):
        c.search("m", np.ones(4, np.float32), k=0)
    with pytest.raises(mnemo.InvalidArgument, match="appears more than once"):
        c.upsert("m", [1, 1], np.ones((2, 4), np.float32))
    with pytest.raises(mnemo.NotFound, match="no KV space named 'space'"):
        c.match_prefix("space", [b"\0" * 32])
    assert isinstance(mnemo.NotFound("x"), mnemo.Error)
    assert c.stats("m").count == 0
    with pytest.raises(mnemo.Unavailable):
        mnemo.Client("127.0.0.1:1")


def test_threads_with_their_own_clients_get_their_own_answers(daemon):
    c = mnemo.Client(daemon.address)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    c.create_collection("t", dim=8)
    c.upsert("t", np.arange(3000), x)
    failures = []

    def worker(offset):
        cc = mnemo.Client(daemon.address)
        for i in range(offset, 3000, 250):
            _, I = cc.search("t", x[i], k=1)
            if I[0, 0] != i:
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_writes_survive_restart_and_admin_port_serves(daemon_factory, tmp_path):
    d = daemon_factory(tmp_path / "store")
    c = mnemo.Client(d.address)
    c.create_collection("r", dim=2, index="HNSW8")
    c.upsert("r", np.arange(100), np.random.default_rng(2).normal(size=(100, 2)))
    with urllib.request.urlopen(f"http://{d.http}/healthz") as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://{d.http}/metrics") as r:
        text = r.read().decode()
    assert 'mnemo_requests_total{op="upsert"} 1' in text
    assert d.stop(signal.SIGTERM) == 0
    d2 = daemon_factory(tmp_path / "store")
    assert mnemo.Client(d2.address).stats("r").count == 100


def test_generated_wire_code_matches_the_schema(tmp_path):
    flatc = shutil.which("flatc")
    assert flatc, "flatc is installed by tools/install_deps.sh"
    subprocess.run([flatc, "--python", "-o", str(tmp_path), str(ROOT / "net" / "mnemo.fbs")],
                   check=True)
    fresh = tmp_path / "mnemo" / "wire"
    kept = ROOT / "reader" / "mnemo" / "wire"
    names = sorted(p.name for p in fresh.glob("*.py"))
    assert names == sorted(p.name for p in kept.glob("*.py"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, kept, names, shallow=False)
    assert not mismatch and not errors, f"regenerate reader/mnemo/wire: {mismatch}"


def test_quickstart_script_imports_and_queries(daemon):
    p = subprocess.run(["/usr/bin/python3", str(ROOT / "tools" / "quickstart.py"), "--addr",
                        daemon.address, "--n", "3000"], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "reader"), "OPENBLAS_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert "imported 3000 generated vectors" in p.stdout
    assert "recall@10 over 100 queries" in p.stdout


def test_api_keys_bound_roles_and_collections(daemon_factory, build_dir, tmp_path):
    auth = tmp_path / "keys.toml"
    auth.write_text('[[key]]\nkey = "root"\nrole = "admin"\n\n'
                    '[[key]]\nkey = "reader"\nrole = "read"\n\n'
                    '[[key]]\nkey = "writer"\nrole = "write"\ncollections = ["mine"]\n')
    d = daemon_factory(tmp_path / "data", "--auth-file", str(auth))
    admin = mnemo.Client(d.address, api_key="root")
    admin.create_collection("mine", dim=2)
    admin.create_collection("theirs", dim=2)
    v = np.array([[1, 2], [3, 4]], np.float32)
    admin.upsert("theirs", [1, 2], v)

    with pytest.raises(mnemo.Unauthenticated, match="requires an API key"):
        mnemo.Client(d.address).list()
    with pytest.raises(mnemo.Unauthenticated, match="unknown API key"):
        mnemo.Client(d.address, api_key="guess").search("theirs", v[0], k=1)

    reader = mnemo.Client(d.address, api_key="reader")
    assert reader.search("theirs", v[0], k=1)[1][0][0] == 1
    with pytest.raises(mnemo.PermissionDenied, match="a read key may not upsert"):
        reader.upsert("theirs", [3], v[:1])

    writer = mnemo.Client(d.address, api_key="writer")
    writer.upsert("mine", [7], v[:1])
    assert [s.name for s in writer.list()] == ["mine"]
    with pytest.raises(mnemo.PermissionDenied, match="may not use 'theirs'"):
        writer.get("theirs", [1])
    with pytest.raises(mnemo.PermissionDenied, match="may not create_collection"):
        writer.create_collection("more", dim=2)
    assert admin.stats("theirs").count == 2 and admin.stats("mine").count == 1
    # Same-host KV puts (a reservation, then the put) need a write key too.
    admin.create_kv_space("theirs_kv", 2, 8, 64, chunk_tokens=1024)
    kv = np.zeros((2, 8, 1024, 64), np.float16)
    with pytest.raises(mnemo.PermissionDenied, match="a read key may not"):
        reader.put_kv("theirs_kv", b"h" * 32, kv, kv)
    with pytest.raises(mnemo.PermissionDenied, match="may not use 'theirs_kv'"):
        writer.put_kv("theirs_kv", b"h" * 32, kv, kv)
    admin.put_kv("theirs_kv", b"h" * 32, kv, kv)
    assert admin.kv_stats("theirs_kv").segments == 1

    # The command-line tool passes --api-key.
    tool = str(build_dir / "tools" / "mnemo")
    ok = subprocess.run([tool, "--addr", d.address, "--api-key", "reader", "stats", "mine"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "count=1" in ok.stdout
    denied = subprocess.run([tool, "--addr", d.address, "drop", "mine"], capture_output=True,
                            text=True)
    assert denied.returncode == 1 and "requires an API key" in denied.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[[key]]\nkey = "x"\nrole = "owner"\n')
    p = subprocess.run([str(build_dir / "tools" / "mnemod"), "--data-dir", str(tmp_path / "d2"),
                        "--auth-file", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "role must be read, write or admin" in p.stderr


def test_hnsw_ef_construction_is_set_at_create(daemon):
    c = mnemo.Client(daemon.address)
    assert c.create_collection("g96", dim=4, index="HNSW8", ef_construction=96).ef_construction == 96
    assert c.create_collection("gdef", dim=4, index="HNSW8").ef_construction == 64
    assert c.create_collection("gflat", dim=4).ef_construction == 0
    with pytest.raises(mnemo.InvalidArgument, match="ef_construction must be at most 2048"):
        c.create_collection("gbig", dim=4, index="HNSW8", ef_construction=5000)
    assert "gbig" not in {x.name for x in c.list()}
    assert c.stats("g96").ef_construction == 96


def test_upsert_many_pipelines_batches_each_atomic(daemon):
    c = mnemo.Client(daemon.address)
    for name in ("u1", "u2"):
        c.create_collection(name, dim=4)
    rng = np.random.default_rng(6)
    batches = [{"name": "u1" if i % 2 else "u2", "ids": np.arange(i * 10, i * 10 + 10, dtype=np.uint64),
                "vectors": rng.standard_normal((10, 4)).astype(np.float32),
                "payloads": [f"p{i}-{j}" for j in range(10)]} for i in range(300)]
    assert c.upsert_many(batches) == [10] * 300      # more than the pipeline's depth
    assert c.stats("u1").count == 1500 and c.stats("u2").count == 1500
    e = c.get("u1", [10, 19])
    assert e.payloads == [b"p1-0", b"p1-9"]
    np.testing.assert_array_equal(e.vectors, batches[1]["vectors"][[0, 9]])
    # A failed batch (wrong dimension) is raised after every reply is read;
    # the batches around it are stored, the failed one not at all.
    bad = [{"name": "u1", "ids": [9001], "vectors": np.ones((1, 4), np.float32)},
           {"name": "u1", "ids": [9002, 9003], "vectors": np.ones((2, 3), np.float32)},
           {"name": "u2", "ids": [9004], "vectors": np.ones((1, 4), np.float32)}]
    with pytest.raises(mnemo.InvalidArgument):
        c.upsert_many(bad)
    assert list(c.get("u1", [9001, 9002, 9003]).ids) == [9001]
    assert list(c.get("u2", [9004]).ids) == [9004]


def test_search_many_asks_several_collections_in_one_round_trip(daemon):
    c = mnemo.Client(daemon.address)
    rng = np.random.default_rng(5)
    data = {name: rng.standard_normal((50, 8)).astype(np.float32) for name in ("m1", "m2")}
    for name, vecs in data.items():
        c.create_collection(name, dim=8, index="HNSW8" if name == "m2" else "Flat")
        c.upsert(name, np.arange(50, dtype=np.uint64), vecs)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    specs = [{"name": "m1", "queries": q, "k": 4}, {"name": "m2", "queries": q[0], "k": 2, "ef": 64},
             {"name": "m1", "queries": q[1:], "k": 1}]
    got = c.search_many(specs)
    assert len(got) == 3
    for (D, I), spec in zip(got, specs):
        D1, I1 = c.search(**spec)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_allclose(D, D1)
    assert got[1][1].shape == (1, 2)
    # An error in one search is raised once all replies are read; the
    # connection stays in step for the next call.
    with pytest.raises(mnemo.NotFound):
        c.search_many([{"name": "m1", "queries": q}, {"name": "nope", "queries": q},
                       {"name": "m2", "queries": q}])
    D, I = c.search("m1", q[:1], k=1)
    assert I.shape == (1, 1)
    # More searches than the daemon lets a connection have unanswered.
    many = c.search_many([{"name": "m1", "queries": q[i % 3], "k": 1} for i in range(600)])
    assert [int(I[0, 0]) for _, I in many[:3]] == [int(c.search("m1", q[i], k=1)[1][0, 0])
                                                   for i in range(3)]
    assert len(many) == 600


def test_an_attachment_without_a_valid_key_is_not_read(daemon_factory, tmp_path):
    """A frame announcing a 1 GiB attachment with no key is answered
    Unauthenticated at once, before any of the attachment is sent, and the
    connection is closed: the daemon buffers nothing for it."""
    import socket
    import struct
    import flatbuffers
    from mnemo._builders import string, table
    from mnemo._transport import PROTOCOL_VERSION, body
    from mnemo.wire import Error, PutKv, Request, RequestFrame, Response, ResponseFrame
    auth = tmp_path / "keys.toml"
    auth.write_text('[[key]]\nkey = "root"\nrole = "admin"\n')
    d = daemon_factory(tmp_path / "data", "--auth-file", str(auth))
    mnemo.Client(d.address, api_key="root").create_kv_space("s", 2, 8, 64, chunk_tokens=16)
    host, port = d.address.rsplit(":", 1)
    for key in (None, "guess"):
        b = flatbuffers.Builder(256)
        put = table(b, PutKv, Space=string(b, "s"), ChunkHash=b.CreateByteVector(b"h" * 32), Tokens=16)
        k = string(b, key) if key else None
        b.Finish(table(b, RequestFrame, Version=PROTOCOL_VERSION, RequestId=42, ApiKey=k,
                       RequestType=Request.Request.PutKv, Request=put))
        data = bytes(b.Output())
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(struct.pack("<II", len(data), 1 << 30) + data)   # and no attachment
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break                                              # closed by the daemon
                got += chunk
        length, _ = struct.unpack("<II", got[:8])
        reply = ResponseFrame.ResponseFrame.GetRootAs(got[8:8 + length], 0)
        assert reply.RequestId() == 42
        err = body(reply, Error.Error, Response.Response.Error)
        assert err.Code() == mnemo.Unauthenticated.code
        assert b"attachment was not read" in err.Message()
    assert mnemo.Client(d.address, api_key="root").kv_stats("s").segments == 0


def test_the_daemons_files_are_its_users_alone(daemon_factory, tmp_path):
    d = daemon_factory(tmp_path / "data")
    c = mnemo.Client(d.address)
    c.create_collection("private", dim=2)
    c.upsert("private", [1], np.ones((1, 2), np.float32))
    c.create_kv_space("kv", 1, 1, 8, chunk_tokens=4)
    c.put_kv("kv", b"k" * 32, np.ones((1, 1, 4, 8), np.float16), np.ones((1, 1, 4, 8), np.float16))
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in (tmp_path / "data").rglob("*")}
    assert modes and all(m & 0o077 == 0 for m in modes.values()), modes
