"""The Celery app the tests' workers run: the broker is actormq's AMQP port (from
CELERY_BROKER_URL), results come back over the `rpc://` backend (a reply queue per
client), one task at a time (`--pool=solo`, prefetch multiplier 1)."""

import os
import pathlib
import time

from celery import Celery

app = Celery("actormq_it", broker=os.environ["CELERY_BROKER_URL"], backend="rpc://")
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task(acks_late=True)
def crash_once(marker_dir):
    """The first run marks that it started and then hangs (the test kills its worker);
    a redelivered run returns at once."""
    d = pathlib.Path(marker_dir)
    started = list(d.glob("started-*"))
    (d / f"started-{os.getpid()}").touch()
    if not started:
        time.sleep(600)
    return "redelivered"
