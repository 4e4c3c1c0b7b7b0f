"""pytest plugin: aio-pika's and aiormq's own suites against actormq, unmodified.

Their conftest starts RabbitMQ in a Docker container through `tests/docker_client.py`
(Docker's HTTP API). This plugin, loaded with `-p docker_shim` from the sdist's
directory, replaces that client before the conftest imports it: a "container" is an
`actormq serve` process (ACTORMQ_BIN) on ephemeral ports with its data in a temporary
directory, AMQPS included when ACTORMQ_SUITE_CERTS names a directory with aiormq's test
certificates (server.pem, server.key, ca.pem; client certificates verified as the
suites' RabbitMQ is configured: verify_peer, fail_if_no_peer_cert=false).

What the suites do to their container maps onto the process: kill = SIGKILL, start =
the same broker again on the same ports and data, and `rabbitmqctl stop_app` /
`start_app` (run through Docker's exec API) = a graceful shutdown (clients get 320
CONNECTION_FORCED, as from stop_app) and a start. The tests are not touched.
"""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from yarl import URL

sys.path.insert(0, os.getcwd())

import tests.docker_client as dc  # noqa: E402  (the suite's module, patched below)

_DockerClient = dc.DockerClient  # the suite's own, for its port parsing

BIN = os.environ.get("ACTORMQ_BIN", "actormq")
CERTS = os.environ.get("ACTORMQ_SUITE_CERTS")
DEADLINE = 30.0

_ids = itertools.count(1)
_brokers = {}
_execs = {}


class _Broker:
    """One actormq process standing in for one container."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="actormq-suite-")
        self.ports = {"5672/tcp": 0}
        if CERTS:
            self.ports["5671/tcp"] = 0
        self.proc = None
        self.start()

    def start(self):
        env = dict(os.environ)
        env.update(
            ACTORMQ__SERVER__BIND="127.0.0.1:0",
            ACTORMQ__AMQP__BIND=f"127.0.0.1:{self.ports['5672/tcp']}",
            ACTORMQ__HTTP__BIND="127.0.0.1:0",
            ACTORMQ__STORAGE__DATA_DIR=os.path.join(self.dir, "data"),
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        if CERTS:
            env.update(
                ACTORMQ__AMQP__TLS_BIND=f"127.0.0.1:{self.ports['5671/tcp']}",
                ACTORMQ__TLS__CERT_FILE=os.path.join(CERTS, "server.pem"),
                ACTORMQ__TLS__KEY_FILE=os.path.join(CERTS, "server.key"),
                ACTORMQ__TLS__CA_FILE=os.path.join(CERTS, "ca.pem"),
                ACTORMQ__TLS__VERIFY="peer",
            )
        log = open(os.path.join(self.dir, "broker.log"), "a")
        self.proc = subprocess.Popen(
            [BIN, "serve"],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        wanted = {"AMQP": "5672/tcp", "AMQPS": "5671/tcp"}
        seen = set()
        end = time.monotonic() + DEADLINE
        while len(seen) < len(self.ports):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"actormq exited at start (log: {self.dir})")
            words = line.split()
            if line.startswith("actormq AMQP") and words[2] == "listening":
                key = wanted[words[1]]
                self.ports[key] = int(words[-1].rsplit(":", 1)[1])
                seen.add(key)
            if time.monotonic() > end:
                raise RuntimeError("actormq did not print its addresses")

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Client:
    """Docker's client as the suites use it, over actormq processes."""

    def __init__(self, docker_host_info=None):
        self.docker_host_info = docker_host_info or dc.DockerHostInfo(is_tcp=False)

    def run(self, image, ports, environment=None):
        cid = f"actormq-{next(_ids)}"
        _brokers[cid] = _Broker()
        return dc.ContainerInfo(id=cid, ports=dict(_brokers[cid].ports), host="127.0.0.1")

    def start(self, container_id):
        b = _brokers[container_id]
        if b.proc.poll() is not None:
            b.start()

    def inspect(self, container_id):
        b = _brokers[container_id]
        return {
            "NetworkSettings": {
                "Ports": {k: [{"HostPort": str(v)}] for k, v in b.ports.items()}
            }
        }

    def stop(self, container_id, timeout=10):
        _brokers[container_id].signal(signal.SIGTERM)

    def kill(self, container_id):
        _brokers[container_id].signal(signal.SIGKILL)

    def remove(self, container_id):
        b = _brokers.pop(container_id, None)
        if b:
            b.signal(signal.SIGKILL)
            shutil.rmtree(b.dir, ignore_errors=True)

    def _parse_ports(self, info):
        return _DockerClient._parse_ports(self, info)

    def _request(self, method, path, body=None):
        # `rabbitmqctl stop_app` / `start_app` through Docker's exec API.
        parts = path.strip("/").split("/")
        if parts[0] == "containers" and parts[-1] == "exec":
            eid = f"exec-{next(_ids)}"
            _execs[eid] = (parts[1], body["Cmd"])
            return {"Id": eid}
        if parts[0] == "exec" and parts[-1] == "start":
            cid, cmd = _execs[parts[1]]
            if cmd == ["rabbitmqctl", "stop_app"]:
                _brokers[cid].signal(signal.SIGTERM)
            elif cmd == ["rabbitmqctl", "start_app"]:
                self.start(cid)
            else:
                raise NotImplementedError(f"no actormq equivalent of {cmd}")
            return {}
        if parts[0] == "exec" and parts[-1] == "json":
            return {"Running": False, "ExitCode": 0}
        raise NotImplementedError(f"Docker API {method} {path}")


def _available():
    return dc.DockerHostInfo(is_tcp=False)


dc.check_docker_available = _available
dc.DockerClient = _Client


@pytest.fixture(scope="session")
def rabbitmq_container():
    """aiormq's sdist uses these two fixtures without shipping them (aio-pika's
    conftest defines its own, which take precedence over a plugin's)."""
    client = _Client()
    info = client.run("actormq", ["5672/tcp", "5671/tcp"])
    yield info
    client.remove(info.id)


@pytest.fixture(scope="session")
def amqp_direct_url(rabbitmq_container):
    return URL.build(
        scheme="amqp",
        user="guest",
        password="guest",
        path="//",
        host=rabbitmq_container.host,
        port=rabbitmq_container.ports["5672/tcp"],
    )


def pytest_unconfigure(config):
    for cid in list(_brokers):
        _Client().remove(cid)
