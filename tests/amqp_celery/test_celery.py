"""Celery (and kombu / py-amqp under it) against actormq's AMQP port, run by .ci/run.

A real worker process (`celery worker --pool=solo`) per test, the `rpc://` result
backend, remote control over the `celery.pidbox` fanout (`inspect ping`), an ETA task
held by a prefetch-1 worker while other tasks keep flowing (kombu's basic.qos
global=false to a non-RabbitMQ server, raised later: it must reach the existing
consumer), and `acks_late` redelivery when the worker is killed.

The broker is the debug binary that `cargo test` built (ACTORMQ_BIN, default
target/debug/actormq), on ephemeral ports with its data in a temporary directory.
"""

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEADLINE = 30.0


def binary():
    explicit = os.environ.get("ACTORMQ_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "actormq")


@pytest.fixture(scope="module")
def broker_url():
    d = tempfile.TemporaryDirectory()
    env = dict(os.environ)
    env.update(
        ACTORMQ__SERVER__BIND="127.0.0.1:0",
        ACTORMQ__AMQP__BIND="127.0.0.1:0",
        ACTORMQ__HTTP__BIND="127.0.0.1:0",
        ACTORMQ__BROKER__WORKERS="2",
        ACTORMQ__STORAGE__DATA_DIR=os.path.join(d.name, "data"),
        RUST_LOG="warn",
    )
    proc = subprocess.Popen(
        [binary(), "serve"], cwd=d.name, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, text=True,
    )
    addr = None
    while addr is None:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the broker exited before listening")
        if line.startswith("actormq AMQP listening on "):
            addr = line.split()[-1]
    url = f"amqp://guest:guest@{addr}//"
    os.environ["CELERY_BROKER_URL"] = url
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    d.cleanup()


@pytest.fixture(scope="module")
def app(broker_url):
    sys.path.insert(0, str(HERE))
    import celery_app

    yield celery_app
    celery_app.app.close()


class Worker:
    """`celery worker --pool=solo` in a process of its own."""

    def __init__(self, app, name):
        self.app = app
        self.name = f"{name}@actormq-it"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker",
             "--pool=solo", "--without-gossip", "--without-mingle",
             "-n", self.name, "-l", "warning"],
            cwd=HERE, env=env, stdin=subprocess.DEVNULL,
        )
        # Ready once it answers a ping over the pidbox fanout (`celery inspect ping`).
        end = time.monotonic() + DEADLINE
        while not self.ping():
            assert self.proc.poll() is None, "the worker exited"
            assert time.monotonic() < end, f"{self.name} did not answer a ping"

    def ping(self):
        replies = self.app.app.control.ping(destination=[self.name], timeout=1.0)
        return any(self.name in r for r in replies)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def worker(app):
    w = Worker(app, "w1")
    yield w
    w.stop()


def test_result_comes_back_over_rpc_backend(app, worker):
    assert app.add.delay(2, 3).get(timeout=DEADLINE) == 5
    assert worker.ping()


def test_eta_task_does_not_stop_a_prefetch_one_worker(app, worker):
    # The worker holds this task until its ETA; to keep taking tasks meanwhile it raises
    # the channel's prefetch (kombu: basic.qos global=false to a non-RabbitMQ server).
    held = app.add.apply_async((100, 1), countdown=120)
    results = [app.add.delay(i, i) for i in range(5)]
    assert [r.get(timeout=DEADLINE) for r in results] == [0, 2, 4, 6, 8]
    held.revoke()


def test_acks_late_task_is_redelivered_when_its_worker_dies(app, tmp_path):
    w1 = Worker(app, "w1")
    res = app.crash_once.delay(str(tmp_path))
    end = time.monotonic() + DEADLINE
    while not list(tmp_path.glob("started-*")):
        assert time.monotonic() < end, "the task did not start"
        time.sleep(0.05)
    w1.stop(signal.SIGKILL)
    w2 = Worker(app, "w2")
    try:
        assert res.get(timeout=DEADLINE) == "redelivered"
        assert len(list(tmp_path.glob("started-*"))) == 2
    finally:
        w2.stop()
