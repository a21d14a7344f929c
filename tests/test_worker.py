"""The one Ctrl-C policy every backend's parent follows (bench.execution.worker.ctrl_c), with real signals."""

from __future__ import annotations

import os
import signal

import pytest

from bench.execution import worker


def test_first_ctrl_c_asks_for_a_graceful_stop_and_the_second_stops_now():
    asked = []
    with pytest.raises(KeyboardInterrupt):
        with worker.ctrl_c(lambda: asked.append("stop")):
            os.kill(os.getpid(), signal.SIGINT)
            assert asked == ["stop"]  # the block goes on: runs finish their epoch
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("the second Ctrl-C did not stop the block")
    assert asked == ["stop"]


def test_the_previous_handler_is_back_after_the_block():
    previous = signal.getsignal(signal.SIGINT)
    with worker.ctrl_c(lambda: None):
        assert signal.getsignal(signal.SIGINT) is not previous
    assert signal.getsignal(signal.SIGINT) is previous
