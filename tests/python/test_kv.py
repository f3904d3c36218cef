"""KV spaces through the Python client against a real mnemod: round trips of
every codec, prefix matching with chained hashes, eviction, restart, and
refused input."""
import gc
import os
import weakref

import numpy as np
import pytest

import mnemo

LAYERS, HEADS, DIM, CHUNK = 4, 2, 16, 32


def kv(tokens, seed, dtype=np.float16):
    """[layers, heads, tokens, dim]: smooth across tokens, one outlier channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(tokens)[None, None, :, None]
    d = np.arange(DIM)[None, None, None, :]
    x = np.sin(0.05 * t + 0.3 * d + rng.normal(size=(LAYERS, HEADS, 1, 1)))
    x = x + 0.01 * rng.normal(size=(LAYERS, HEADS, tokens, DIM))
    x[..., 3] *= 20
    return x.astype(dtype)


@pytest.fixture
def client(daemon):
    return mnemo.Client(daemon.address)


def test_raw_round_trip_is_bit_exact_and_layers_can_be_chosen(client):
    st = client.create_kv_space("raw", LAYERS, HEADS, DIM, dtype="f16", chunk_tokens=CHUNK)
    assert (st.codec, st.dtype, st.segments) == ("raw", "f16", 0)
    k, v = kv(CHUNK, 1), kv(CHUNK, 2)
    h = mnemo.prefix_hashes(range(CHUNK), CHUNK, "test")[0]
    client.put_kv("raw", h, k, v)
    k2, v2 = client.get_kv("raw", h)
    assert k2.dtype == np.float16 and k2.shape == k.shape
    assert k2.tobytes() == k.tobytes() and v2.tobytes() == v.tobytes()
    k3, v3 = client.get_kv("raw", h, layers=[3, 1])
    np.testing.assert_array_equal(k3, k[[3, 1]])
    np.testing.assert_array_equal(v3, v[[3, 1]])
    st = client.kv_stats("raw")
    assert st.segments == 1 and st.hits == 2 and st.bytes_stored >= k.nbytes + v.nbytes


def test_layers_stream_in_order_and_land_in_caller_buffers(client):
    client.create_kv_space("s", LAYERS, HEADS, DIM, dtype="f16", chunk_tokens=CHUNK, codec="int8")
    k, v = kv(CHUNK, 5), kv(CHUNK, 6)
    client.put_kv("s", b"s" * 32, k, v)
    full_k, full_v = client.get_kv("s", b"s" * 32)
    # Layer by layer, in the order asked for, each [heads, tokens, dim].
    seen = [(layer, lk, lv) for layer, lk, lv in client.get_kv_layers("s", b"s" * 32, layers=[2, 0])]
    assert [layer for layer, _, _ in seen] == [2, 0]
    np.testing.assert_array_equal(seen[0][1], full_k[2])
    np.testing.assert_array_equal(seen[1][2], full_v[0])
    # A reader that stops after layer 0 leaves the connection in step.
    for layer, lk, _ in client.get_kv_layers("s", b"s" * 32):
        assert layer == 0 and lk.shape == (HEADS, CHUNK, DIM)
        break
    assert client.match_prefix("s", [b"s" * 32]) == 1
    # Into the caller's arrays (say, pinned staging buffers): those come back.
    ko, vo = np.zeros_like(k), np.zeros_like(v)
    rk, rv = client.get_kv("s", b"s" * 32, out=(ko, vo))
    assert rk is ko and rv is vo
    np.testing.assert_array_equal(ko, full_k)
    np.testing.assert_array_equal(vo, full_v)
    with pytest.raises(mnemo.InvalidArgument, match="out arrays must hold"):
        client.get_kv("s", b"s" * 32, out=(ko[:2], vo[:2]))
    with pytest.raises(mnemo.InvalidArgument, match="writable C-contiguous"):
        client.get_kv("s", b"s" * 32, out=(ko[:, :, ::2], vo))
    # The connection survived the refusals too.
    with pytest.raises(mnemo.NotFound):
        client.get_kv("s", b"x" * 32)
    assert client.kv_stats("s").segments == 1


def test_get_reuses_the_memory_of_arrays_the_caller_let_go_and_never_of_kept_ones(daemon):
    client = mnemo.Client(daemon.address)
    client.create_kv_space("big", LAYERS, 8, 64, dtype="f16", chunk_tokens=1024)  # 4 MiB a side
    rng = np.random.default_rng(3)
    segs = {h: (rng.standard_normal((LAYERS, 8, 1024, 64)).astype(np.float16),
                rng.standard_normal((LAYERS, 8, 1024, 64)).astype(np.float16)) for h in (b"a" * 32, b"b" * 32)}
    for h, (k, v) in segs.items():
        client.put_kv("big", h, k, v)
    a, b = segs
    ka, va = client.get_kv("big", a)
    block = ka.__array_interface__["data"][0]  # where a's memory is
    kb, vb = client.get_kv("big", b)  # a's arrays are held: b gets other memory
    assert not np.shares_memory(ka, kb)
    assert ka.tobytes() == segs[a][0].tobytes() and va.tobytes() == segs[a][1].tobytes()
    row = ka[1]  # a view keeps the whole block in use
    del ka, va
    kb2, _ = client.get_kv("big", b)
    assert not np.shares_memory(row, kb2)
    assert row.tobytes() == segs[a][0][1].tobytes()
    del row
    # Nothing refers to a's block any more: the next get fills it again.
    k, v = client.get_kv("big", a, layers=[0, 1, 2, 3])
    assert k.__array_interface__["data"][0] == block
    assert k.tobytes() == segs[a][0].tobytes() and v.tobytes() == segs[a][1].tobytes()
    # Layer by layer too; a torch tensor or any view of a layer keeps it.
    kept = [lk for _, lk, _ in client.get_kv_layers("big", b)]
    assert [x.tobytes() for x in kept] == [x.tobytes() for x in segs[b][0]]
    # recycle_bytes=0: every get has memory of its own.
    fresh = mnemo.Client(daemon.address, recycle_bytes=0)
    k1, _ = fresh.get_kv("big", a)
    first = weakref.ref(k1.base)
    del k1, _
    k2, _ = fresh.get_kv("big", a)
    assert first() is None or k2.base is not first()


def test_big_gets_stream_in_parts_and_a_bad_layer_ends_the_reply_with_its_error(daemon_factory,
                                                                               tmp_path):
    # Layers of 2 MiB keys + 2 MiB values: mnemod sends each layer as its
    # own part, as soon as it is read.
    d = daemon_factory(tmp_path / "store")
    # Put over the connection: its layers lie in order in one appended file.
    c = mnemo.Client(d.address, same_host=False)
    heads, tokens, dim, layers = 8, 1024, 128, 4
    c.create_kv_space("big", layers, heads, dim, dtype="f16", chunk_tokens=tokens)
    rng = np.random.default_rng(3)
    k = rng.standard_normal((layers, heads, tokens, dim)).astype(np.float16)
    v = rng.standard_normal((layers, heads, tokens, dim)).astype(np.float16)
    c.put_kv("big", b"b" * 32, k, v)
    frames, read_frame = [], c._connection.reply
    c._connection.reply = lambda: frames.append(1) or read_frame()
    k2, v2 = c.get_kv("big", b"b" * 32)
    assert k2.tobytes() == k.tobytes() and v2.tobytes() == v.tobytes()
    assert len(frames) == layers
    k3, v3 = c.get_kv("big", b"b" * 32, layers=[3, 0])
    assert k3.tobytes() == k[[3, 0]].tobytes() and v3.tobytes() == v[[3, 0]].tobytes()

    # Flip a byte of layer 1 (the layers lie in order in the only value log
    # file): layer 0 arrives, then the reply ends with Corruption, though
    # layers 2 and 3 were read meanwhile.
    (vlog,) = (tmp_path / "store").rglob("*.vlog")
    with open(vlog, "r+b") as f:
        at = vlog.stat().st_size * 3 // 8
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    got = []
    with pytest.raises(mnemo.Corruption):
        for layer, lk, lv in c.get_kv_layers("big", b"b" * 32):
            got.append(layer)
            assert lk.tobytes() == k[layer].tobytes() and lv.tobytes() == v[layer].tobytes()
    assert got == [0]
    with pytest.raises(mnemo.Corruption):
        c.get_kv("big", b"b" * 32)
    # The connection is in step: the good layers still come back.
    k4, _ = c.get_kv("big", b"b" * 32, layers=[3, 2])
    assert k4.tobytes() == k[[3, 2]].tobytes()
    # A reader that stops early skips the rest of the parts.
    for layer, _, _ in c.get_kv_layers("big", b"b" * 32, layers=[0, 2, 3]):
        break
    assert c.match_prefix("big", [b"b" * 32]) == 1


@pytest.mark.parametrize("codec,ratio", [("int8", 1.7), ("int4", 3.0), ("entropy", 2.0)])
def test_lossy_codecs_stay_within_their_bounds(client, codec, ratio):
    client.create_kv_space(codec, LAYERS, HEADS, DIM, dtype="f32", chunk_tokens=CHUNK,
                           codec=codec)
    k, v = kv(CHUNK, 3, np.float32), kv(CHUNK, 4, np.float32)
    client.put_kv(codec, b"k" * 32, k, v)
    k2, v2 = client.get_kv(codec, b"k" * 32)
    if codec == "int4":  # keys per channel over 32 tokens, values per token over 32 channels
        kb = (k.max(axis=2, keepdims=True) - k.min(axis=2, keepdims=True)) / 15 / 2
        vb = (v.max(axis=3, keepdims=True) - v.min(axis=3, keepdims=True)) / 15 / 2
    else:  # per channel, over the tokens
        kb = np.abs(k).max(axis=2, keepdims=True) / 127 / 2
        vb = np.abs(v).max(axis=2, keepdims=True) / 127 / 2
    assert np.all(np.abs(k2 - k) <= kb * (1 + 1e-5) + 1e-6)
    assert np.all(np.abs(v2 - v) <= vb * (1 + 1e-5) + 1e-6)
    st = client.kv_stats(codec)
    assert st.raw_bytes / st.bytes_stored > ratio


def test_prefix_matching_across_shared_and_diverging_prompts(client):
    client.create_kv_space("p", LAYERS, HEADS, DIM, chunk_tokens=CHUNK)
    prompt = list(range(1000, 1000 + 4 * CHUNK + 5))  # 4 full chunks and a tail
    hashes = mnemo.prefix_hashes(prompt, CHUNK, "model-a")
    assert len(hashes) == 4 and len(set(hashes)) == 4
    for i, h in enumerate(hashes):
        client.put_kv("p", h, kv(CHUNK, i), kv(CHUNK, i + 100))
    assert client.match_prefix("p", hashes) == 4
    # Same first two chunks, then different tokens: the chain diverges.
    other = prompt[:2 * CHUNK] + [7] * (2 * CHUNK)
    assert client.match_prefix("p", mnemo.prefix_hashes(other, CHUNK, "model-a")) == 2
    # The same tokens later in a prompt do not match: the hash chains the prefix.
    shifted = [5] * CHUNK + prompt
    assert client.match_prefix("p", mnemo.prefix_hashes(shifted, CHUNK, "model-a")) == 0
    # Another model's namespace never shares chunks.
    assert client.match_prefix("p", mnemo.prefix_hashes(prompt, CHUNK, "model-b")) == 0
    # Deterministic across processes: a fixed digest.
    assert mnemo.prefix_hashes([1, 2], 2, "m")[0].hex()[:16] == \
        mnemo.prefix_hashes(np.array([1, 2]), 2, "m")[0].hex()[:16]


def test_capacity_evicts_lru_and_segments_survive_restart(daemon_factory, tmp_path):
    d = daemon_factory(tmp_path / "store")
    c = mnemo.Client(d.address)
    k = kv(CHUNK, 5)
    c.create_kv_space("lru", LAYERS, HEADS, DIM, chunk_tokens=CHUNK)
    c.put_kv("lru", b"0" * 32, k, k)
    one = c.kv_stats("lru").bytes_stored
    c.drop_kv_space("lru")
    c.create_kv_space("lru", LAYERS, HEADS, DIM, chunk_tokens=CHUNK, capacity_bytes=3 * one)
    for i in b"123":
        c.put_kv("lru", bytes([i]) * 32, k, k)
    c.get_kv("lru", b"1" * 32)  # 2 is now the least recently used
    c.put_kv("lru", b"4" * 32, k, k)
    with pytest.raises(mnemo.NotFound):
        c.get_kv("lru", b"2" * 32)
    st = c.kv_stats("lru")
    assert (st.segments, st.evictions, st.misses) == (3, 1, 1)

    d.stop()
    d2 = daemon_factory(tmp_path / "store")
    c2 = mnemo.Client(d2.address)
    assert c2.kv_stats("lru").segments == 3
    assert c2.match_prefix("lru", [b"1" * 32, b"3" * 32, b"4" * 32]) == 3
    k2, _ = c2.get_kv("lru", b"4" * 32)
    assert k2.tobytes() == k.tobytes()


def test_wrong_shapes_dtypes_and_names_are_refused(client):
    client.create_kv_space("w", LAYERS, HEADS, DIM, dtype="f16", chunk_tokens=CHUNK)
    k = kv(CHUNK, 6)
    with pytest.raises(mnemo.InvalidArgument, match="holds kv_heads=2"):
        client.put_kv("w", b"h" * 32, k[:, :1], k[:, :1])  # one head short
    with pytest.raises(mnemo.InvalidArgument, match="must both be"):
        client.put_kv("w", b"h" * 32, k[0], k[0])
    with pytest.raises(mnemo.InvalidArgument, match="bytes per token"):
        client.put_kv("w", b"h" * 32, kv(CHUNK + 1, 6), kv(CHUNK + 1, 6))
    with pytest.raises(mnemo.InvalidArgument, match="float16, bfloat16 or float32"):
        client.put_kv("w", b"h" * 32, k.astype(np.int32), k.astype(np.int32))
    with pytest.raises(mnemo.InvalidArgument, match="32 bytes"):
        client.put_kv("w", b"short", k, k)
    with pytest.raises(mnemo.InvalidArgument, match="must both be"):
        client.put_kv("w", b"h" * 32, k, k[:, :, :CHUNK - 1])
    assert client.kv_stats("w").segments == 0
    with pytest.raises(mnemo.NotFound):
        client.get_kv("w", b"h" * 32)
    with pytest.raises(mnemo.InvalidArgument, match="unknown codec"):
        client.create_kv_space("x", LAYERS, HEADS, DIM, codec="zip")
    with pytest.raises(mnemo.InvalidArgument, match="unknown dtype"):
        client.create_kv_space("x", LAYERS, HEADS, DIM, dtype="f8")
    with pytest.raises(mnemo.AlreadyExists):
        client.create_kv_space("w", LAYERS, HEADS, DIM)
    with pytest.raises(mnemo.NotFound):
        client.put_kv("nope", b"h" * 32, k, k)


# --- same-host puts (Client(same_host=...), net/mnemo.fbs ReserveKv) --------

BIG_HEADS, BIG_DIM, BIG_CHUNK = 8, 64, 1024  # 1 MiB of keys per layer in f16


def big_kv(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((LAYERS, BIG_HEADS, BIG_CHUNK, BIG_DIM), dtype=np.float32).astype(np.float16)


def open_value_files():
    """How many of this process's descriptors are open on value-log files."""
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if _link(f"/proc/self/fd/{fd}").endswith(".vlog"))


def _link(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def requests_of(daemon, op):
    import re
    import urllib.request
    text = urllib.request.urlopen(f"http://{daemon.http}/metrics", timeout=5).read().decode()
    found = re.search(rf'mnemo_requests_total{{op="{op}"}} (\d+)', text)
    return int(found.group(1)) if found else 0


def test_same_host_puts_write_into_the_daemons_files_and_read_back_bit_exact(daemon):
    local = mnemo.Client(daemon.address)  # loopback: same_host by default
    remote = mnemo.Client(daemon.address, same_host=False)
    local.create_kv_space("big", LAYERS, BIG_HEADS, BIG_DIM, chunk_tokens=BIG_CHUNK)
    k, v = big_kv(1), big_kv(2)
    local.put_kv("big", b"L" * 32, k, v)
    assert requests_of(daemon, "reserve_kv") == 1
    remote.put_kv("big", b"R" * 32, v, k)
    assert requests_of(daemon, "reserve_kv") == 1  # sent on the connection
    for c in (local, remote):
        k2, v2 = c.get_kv("big", b"L" * 32)
        assert k2.tobytes() == k.tobytes() and v2.tobytes() == v.tobytes()
        k2, v2 = c.get_kv("big", b"R" * 32, layers=[3])
        assert k2.tobytes() == v[3:].tobytes() and v2.tobytes() == k[3:].tobytes()
    # Fewer tokens than a chunk, and a segment replaced in place.
    local.put_kv("big", b"L" * 32, k[:, :, :700], v[:, :, :700])
    k2, v2 = local.get_kv("big", b"L" * 32)
    assert k2.shape == (LAYERS, BIG_HEADS, 700, BIG_DIM) and k2.tobytes() == k[:, :, :700].tobytes()
    assert local.kv_stats("big").segments == 2
    # Wrong shapes are refused as over the connection, and store nothing.
    with pytest.raises(mnemo.InvalidArgument, match="bytes per token"):
        local.put_kv("big", b"X" * 32, k[:3], v[:3])
    assert local.kv_stats("big").segments == 2
    # The client's descriptors of the daemon's files go with it: on close,
    # or when it is collected without one.
    assert open_value_files() > 0
    local.close()
    assert open_value_files() == 0
    other = mnemo.Client(daemon.address)
    other.put_kv("big", b"O" * 32, k, v)
    assert open_value_files() > 0
    del other
    gc.collect()
    assert open_value_files() == 0


def test_same_host_puts_fall_back_to_the_connection_where_they_cannot_be_used(daemon, monkeypatch):
    c = mnemo.Client(daemon.address)
    c.create_kv_space("q", LAYERS, BIG_HEADS, BIG_DIM, chunk_tokens=BIG_CHUNK, codec="int8")
    c.create_kv_space("big", LAYERS, BIG_HEADS, BIG_DIM, chunk_tokens=BIG_CHUNK)
    k = big_kv(3)
    c.put_kv("q", b"q" * 32, k, k)  # the daemon encodes: not same-host
    assert requests_of(daemon, "reserve_kv") == 0
    c.put_kv("big", b"s" * 32, k[:, :, :8], k[:, :, :8])  # 64 KiB: not worth a round trip
    assert requests_of(daemon, "reserve_kv") == 0

    # A client that cannot open the daemon's files (another user, another
    # container) puts over the connection, then stops trying.
    def denied(*args, **kwargs):
        raise PermissionError("not this user's file")
    monkeypatch.setattr(mnemo._same_host.os, "open", denied)
    c.put_kv("big", b"a" * 32, k, k)
    c.put_kv("big", b"b" * 32, k, k)
    assert requests_of(daemon, "reserve_kv") == 1
    monkeypatch.undo()
    for h in (b"a" * 32, b"b" * 32):
        k2, _ = c.get_kv("big", h)
        assert k2.tobytes() == k.tobytes()


def test_same_host_gets_read_the_daemons_files_and_fall_back_where_they_cannot(daemon, monkeypatch):
    local = mnemo.Client(daemon.address)  # loopback: same_host by default
    remote = mnemo.Client(daemon.address, same_host=False)
    local.create_kv_space("big", LAYERS, BIG_HEADS, BIG_DIM, chunk_tokens=BIG_CHUNK)
    k, v = big_kv(4), big_kv(5)
    remote.put_kv("big", b"G" * 32, k, v)
    k2, v2 = local.get_kv("big", b"G" * 32)
    assert requests_of(daemon, "locate_kv") == 1
    assert k2.tobytes() == k.tobytes() and v2.tobytes() == v.tobytes()
    k2, v2 = local.get_kv("big", b"G" * 32, layers=[3, 1])
    assert k2.tobytes() == k[[3, 1]].tobytes() and v2.tobytes() == v[[3, 1]].tobytes()
    staging = (np.empty_like(k), np.empty_like(v))
    got = local.get_kv("big", b"G" * 32, out=staging)
    assert got[0] is staging[0] and staging[1].tobytes() == v.tobytes()
    assert requests_of(daemon, "locate_kv") == 3
    # Over the connection: the same bytes, no locate.
    k3, _ = remote.get_kv("big", b"G" * 32)
    assert k3.tobytes() == k.tobytes() and requests_of(daemon, "locate_kv") == 3
    # A segment not stored is NotFound either way.
    with pytest.raises(mnemo.NotFound):
        local.get_kv("big", b"N" * 32)
    # Files this process cannot open: over the connection, then no more tries.
    fresh = mnemo.Client(daemon.address)

    def denied(*args, **kwargs):
        raise PermissionError("not this user's file")
    monkeypatch.setattr(mnemo._same_host.os, "open", denied)
    k4, _ = fresh.get_kv("big", b"G" * 32)
    k5, _ = fresh.get_kv("big", b"G" * 32)
    assert k4.tobytes() == k.tobytes() and k5.tobytes() == k.tobytes()
    assert requests_of(daemon, "locate_kv") == 5  # the first and the NotFound one


def test_same_host_gets_keep_their_files_open_while_they_read(daemon, monkeypatch):
    # A client keeps few descriptors (here 1), but never closes one a read
    # in flight holds: a segment whose layers lie in several files (the
    # same-host put's lanes) reads back whole, again and again.
    monkeypatch.setattr(mnemo._same_host.ReadOnlyFiles, "_KEPT", 1)
    c = mnemo.Client(daemon.address)
    c.create_kv_space("big", LAYERS, BIG_HEADS, BIG_DIM, chunk_tokens=BIG_CHUNK)
    segs = {bytes([i]) * 32: (big_kv(10 + i), big_kv(20 + i)) for i in range(3)}
    for h, (k, v) in segs.items():
        c.put_kv("big", h, k, v)
    assert len({c.locate_kv("big", [h]).files[0] for h in segs}) >= 1
    assert len(c.locate_kv("big", list(segs)).files) > 1
    for _ in range(2):
        for h, (k, v) in segs.items():
            k2, v2 = c.get_kv("big", h)
            assert k2.tobytes() == k.tobytes() and v2.tobytes() == v.tobytes()


def test_a_same_host_get_that_outlasts_its_lease_is_thrown_away(daemon, monkeypatch):
    # The daemon keeps located files as they are for the lease only; a read
    # that ends later may hold a recycled file's bytes: the client gets the
    # segment over the connection instead.
    c = mnemo.Client(daemon.address)
    c.create_kv_space("big", LAYERS, BIG_HEADS, BIG_DIM, chunk_tokens=BIG_CHUNK)
    k, v = big_kv(6), big_kv(7)
    c.put_kv("big", b"T" * 32, k, v)
    clock = iter([0.0, 3600.0])  # the lease starts, then the reads end an hour later
    monkeypatch.setattr(mnemo._same_host, "monotonic", lambda: next(clock))
    k2, v2 = c.get_kv("big", b"T" * 32)
    assert requests_of(daemon, "locate_kv") == 1  # located, read, and thrown away
    assert k2.tobytes() == k.tobytes() and v2.tobytes() == v.tobytes()
    monkeypatch.undo()
    c.get_kv("big", b"T" * 32)
    assert requests_of(daemon, "locate_kv") == 2  # same host again next time
