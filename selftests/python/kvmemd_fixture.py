# SPDX-License-Identifier: MIT
"""Start a real kvmemd (the build's) on a private socket (cpu backend unless asked)."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.environ.get("TOP") or os.path.dirname(os.path.dirname(HERE))

# Small pools: "default" of fp32 blocks of 4 tokens and 4 KiB frames (64 on
# the device, 256 on the host), "half" of fp16 with head_dim 64.
DEFAULT_POOLS = """
pool.default.layers = 2
pool.default.kv_heads = 2
pool.default.head_dim = 16
pool.default.block_tokens = 4
pool.default.dtype = fp32
pool.default.device_mem = 256K
pool.default.host_mem = 1M
pool.half.layers = 2
pool.half.kv_heads = 2
pool.half.head_dim = 64
pool.half.block_tokens = 16
pool.half.dtype = fp16
pool.half.device_mem = 2M
pool.half.host_mem = 2M
"""


def kvmemd_path():
    p = os.environ.get("KVMEM_KVMEMD")
    if p:
        return p
    build = os.environ.get("KVMEM_BUILD") or os.path.join(TOP, "build")
    return os.path.join(build, "daemon", "kvmemd")


class Kvmemd:
    """A kvmemd under test: .sock, .conf, .log; stop() checks a clean exit."""

    def __init__(self, pools=DEFAULT_POOLS, extra="", backend="cpu"):
        exe = kvmemd_path()
        if not os.access(exe, os.X_OK):
            raise unittest.SkipTest("no kvmemd at %s (run make)" % exe)
        self.dir = tempfile.mkdtemp(prefix="kvmem-py-")
        self.sock = os.path.join(self.dir, "kvmemd.sock")
        self.conf = os.path.join(self.dir, "kvmemd.conf")
        self.log = os.path.join(self.dir, "kvmemd.log")
        with open(self.conf, "w") as f:
            f.write("socket.path = %s\ndevice.backend = %s\nlog.level = warn\n%s\n%s\n" %
                    (self.sock, backend, pools, extra))
        self._logf = open(self.log, "w")
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen([exe, "-c", self.conf], stdout=self._logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.read_log()
                self.stop(check=False)
                raise RuntimeError("kvmemd did not start:\n" + out)
            time.sleep(0.02)

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, check=True):
        """SIGTERM, wait; returns the exit status (0 expected)."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    rc = self.proc.wait()
            else:
                rc = self.proc.returncode
            self.proc = None
            self._logf.close()
        log = self.read_log()
        shutil.rmtree(self.dir, ignore_errors=True)
        if check and rc != 0:
            raise AssertionError("kvmemd exited with %s:\n%s" % (rc, log))
        return rc


class DaemonTestCase(unittest.TestCase):
    """One kvmemd per test class."""

    pools = DEFAULT_POOLS

    @classmethod
    def setUpClass(cls):
        cls.daemon = Kvmemd(cls.pools)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
