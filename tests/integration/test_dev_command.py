"""`loyalty-stream dev` (what `make run` runs): comes up, a CLI-published purchase shows up on
balance-changes with the right points, and Ctrl-C stops the worker and the broker it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from loyalty_stream.devstack.broker import free_port, kafka_answers

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "loyalty_stream.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _env(bootstrap: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(LOYALTY_KAFKA_BOOTSTRAP=bootstrap, REDIS_URL=redis_url,
               LOYALTY_REDIS_PREFIX=f"test:{uuid.uuid4().hex[:8]}:", LOYALTY_DATA_DIR=f"/tmp/ls-dev-{os.getpid()}")
    return env


def test_dev_stack_earns_from_a_cli_purchase_and_stops_cleanly(redis_url: str) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    env = _env(bootstrap, redis_url)
    dev = subprocess.Popen([*CLI, "dev", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = dev.stdout.readline() if dev.stdout else ""
            banner.append(line)
            if "Ctrl-C stops" in line or dev.poll() is not None:
                break
        text = "".join(banner)
        assert "dev stack is up" in text and bootstrap in text, text
        published = subprocess.run(
            [*CLI, "publish", "TransactionAdd", "--json",
             '{"customer_id": "alice", "payload": {"bill_number": "B-1", "amount": "120.00"}}'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
        assert "published to transaction-add" in published.stdout
        tailed = subprocess.run([*CLI, "tail", "balance-changes", "--from-beginning", "-n", "1", "--timeout", "30"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
        change = orjson.loads(tailed.stdout.strip().splitlines()[-1])
        assert change["customer_id"] == "alice" and change["current"] == "12.00"  # 10% bronze, 2 decimals
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            raise
    assert not kafka_answers(bootstrap), "the embedded broker outlived Ctrl-C"
