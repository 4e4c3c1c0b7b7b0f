"""actormq's AMQP 0-9-1 listener driven by pika (from PyPI), run by .ci/run.

Each test module run starts its own broker from the debug binary that `cargo test`
built (ACTORMQ_BIN, default target/debug/actormq) on ephemeral ports, with its data in a
temporary directory, and reads the AMQP address the binary prints on stdout.
"""

import os
import pathlib
import subprocess
import tempfile
import time

import pika
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEADLINE = 20.0


def binary():
    explicit = os.environ.get("ACTORMQ_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "actormq")


class Broker:
    """An actormq process on ephemeral ports; stopped with SIGTERM."""

    def __init__(self, **env):
        self.dir = tempfile.TemporaryDirectory()
        e = dict(os.environ)
        e.update(
            ACTORMQ__SERVER__BIND="127.0.0.1:0",
            ACTORMQ__AMQP__BIND="127.0.0.1:0",
            ACTORMQ__HTTP__BIND="127.0.0.1:0",
            ACTORMQ__BROKER__WORKERS="2",
            ACTORMQ__STORAGE__DATA_DIR=os.path.join(self.dir.name, "data"),
            RUST_LOG="warn",
        )
        e.update(env)
        self.proc = subprocess.Popen(
            [binary(), "serve"],
            cwd=self.dir.name,
            env=e,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.amqp = None
        end = time.monotonic() + DEADLINE
        while self.amqp is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the broker exited before listening")
            if line.startswith("actormq AMQP listening on "):
                self.amqp = line.split()[-1]
            if time.monotonic() > end:
                raise RuntimeError("the broker did not print its AMQP address")

    def params(self, **kw):
        host, port = self.amqp.rsplit(":", 1)
        return pika.ConnectionParameters(
            host=host,
            port=int(port),
            credentials=pika.PlainCredentials("guest", "guest"),
            **kw,
        )

    def connect(self, **kw):
        return pika.BlockingConnection(self.params(**kw))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def broker():
    b = Broker()
    yield b
    b.stop()


def wait_for(what, cond, conn):
    end = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        conn.process_data_events(time_limit=0.05)


def test_server_properties_name_actormq(broker):
    conn = broker.connect()
    props = conn._impl.server_properties
    assert props["product"] == b"actormq" or props["product"] == "actormq"
    caps = props["capabilities"]
    for c in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
              "connection.blocked", "per_consumer_qos"):
        assert caps[c] is True, c
    conn.close()


def test_confirms_and_server_named_queue(broker):
    conn = broker.connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    ch.confirm_delivery()
    for i in range(50):
        # Raises on a nack; returns once confirmed.
        ch.basic_publish("", q, f"m{i}".encode())
    assert ch.queue_declare(q, passive=True).method.message_count == 50
    conn.close()


def test_mandatory_unroutable_is_returned(broker):
    conn = broker.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nowhere", b"x", mandatory=True)
    conn.close()


def test_nack_requeue_redelivers(broker):
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare("pika-requeue")
    ch.queue_purge("pika-requeue")
    ch.basic_publish("", "pika-requeue", b"again",
                     pika.BasicProperties(headers={"k": "v"}, content_type="text/plain"))
    got = []
    wait_for("first get", lambda: got.append(ch.basic_get("pika-requeue")) or got[-1][0], conn)
    method, props, body = got[-1]
    assert not method.redelivered
    assert props.headers == {"k": "v"} and props.content_type == "text/plain"
    ch.basic_nack(method.delivery_tag, requeue=True)
    got.clear()
    wait_for("redelivery", lambda: got.append(ch.basic_get("pika-requeue")) or got[-1][0], conn)
    method, _, body = got[-1]
    assert method.redelivered and body == b"again"
    ch.basic_reject(method.delivery_tag, requeue=False)
    conn.close()


def test_consume_with_prefetch_and_acks(broker):
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare("pika-work")
    ch.queue_purge("pika-work")
    for i in range(10):
        ch.basic_publish("", "pika-work", str(i).encode())
    ch.basic_qos(prefetch_count=3)
    seen = []

    def on_message(c, method, props, body):
        seen.append(body)
        c.basic_ack(method.delivery_tag)

    ch.basic_consume("pika-work", on_message)
    wait_for("ten deliveries", lambda: len(seen) == 10, conn)
    assert seen == [str(i).encode() for i in range(10)]
    conn.close()


def test_consumer_cancel_notification_on_queue_delete(broker):
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare("pika-doomed")
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    ch.basic_consume("pika-doomed", lambda *a: None)
    other = conn.channel()
    other.queue_delete("pika-doomed")
    wait_for("basic.cancel from the broker", lambda: cancelled, conn)
    conn.close()


def test_channel_error_closes_only_the_channel(broker):
    conn = broker.connect()
    bad = conn.channel()
    good = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        bad.queue_declare("pika-missing", passive=True)
    assert e.value.reply_code == 404
    assert e.value.reply_text == "NOT_FOUND - no queue 'pika-missing' in vhost '/'"
    good.queue_declare("pika-alive")
    assert conn.is_open
    conn.close()


def test_heartbeats_keep_an_idle_connection_open(broker):
    conn = broker.connect(heartbeat=1)
    ch = conn.channel()
    # Three intervals of idling: both sides must send heartbeats for this to live.
    conn.process_data_events(time_limit=3)
    assert conn.is_open
    ch.queue_declare("pika-hb")
    conn.close()


def test_blocked_and_unblocked_notifications():
    b = Broker(ACTORMQ__BROKER__MEMORY_HIGH_WATERMARK="10000")
    try:
        conn = b.connect()
        events = []
        conn.add_on_connection_blocked_callback(lambda c, f: events.append("blocked"))
        conn.add_on_connection_unblocked_callback(lambda c, f: events.append("unblocked"))
        ch = conn.channel()
        ch.queue_declare("pika-big")
        ch.basic_publish("", "pika-big", b"x" * 20000)
        wait_for("connection.blocked", lambda: "blocked" in events, conn)
        other = b.connect()
        other.channel().queue_purge("pika-big")
        wait_for("connection.unblocked", lambda: "unblocked" in events, conn)
        other.close()
        conn.close()
    finally:
        b.stop()
