import os
import pathlib
import signal
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reader"))


@pytest.fixture(scope="session")
def build_dir():
    path = pathlib.Path(os.environ.get("MNEMO_BUILD_DIR", ROOT / "build"))
    tool = path / "tools" / "mnemo"
    assert tool.exists(), f"{tool} is missing: build first (tools/test.sh does)"
    return path


class Daemon:
    """A real mnemod on free loopback ports."""

    def __init__(self, exe, data_dir, *flags):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [exe, "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--http",
             "127.0.0.1:0", "--log-level", "warn", *flags],
            stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line.startswith("mnemod listening on "), line
        words = line.split()
        self.address = words[3]
        self.http = words[6].rstrip(")")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def daemon_factory(build_dir, tmp_path):
    started = []

    def start(data_dir=None, *flags):
        d = Daemon(str(build_dir / "tools" / "mnemod"), data_dir or tmp_path / "data", *flags)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop(signal.SIGKILL)


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()
