"""No test may hang the suite: pytest-timeout fails a hung call, and the backstop in
tests/conftest.py ends a test that swallows that failure and waits again."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = '''
import threading, pytest

@pytest.mark.timeout(1)
def test_hung_in_a_lock():
    lock = threading.Lock(); lock.acquire(); lock.acquire()

@pytest.mark.timeout(1)
def test_swallows_the_timeout_and_waits_again():
    lock = threading.Lock(); lock.acquire()
    try:
        lock.acquire()
    except BaseException:
        lock.acquire()
'''


def _pytest(path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ELECTRA_TEST_BACKSTOP_GRACE_S": "2"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest", "-q",
                           "-n0", *args, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_a_hung_test_fails_with_its_stack_and_one_that_swallows_it_ends_the_process(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    hung = _pytest(probe, "-k", "hung_in_a_lock")
    assert hung.returncode == 1, hung.stdout[-2000:]
    assert "Timeout (>1.0s) from pytest-timeout" in hung.stdout and "lock.acquire()" in hung.stdout
    swallowed = _pytest(probe, "-k", "swallows")
    assert swallowed.returncode != 0
    # faulthandler's dump of every thread, on the terminal's stderr, then the exit.
    assert "Timeout (0:00:04)!" in swallowed.stderr and "test_swallows_the_timeout_and_waits_again" in swallowed.stderr
