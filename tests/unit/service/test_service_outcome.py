"""Retry classification, alert-once rule and exit codes of the service. No server."""

from __future__ import annotations

import pytest

from agentvm.service import outcome
from agentvm.service.workflows import retry_policy


@pytest.mark.parametrize(
    ("status", "attempt", "attempts", "shutdown", "retry", "alert", "error_type"),
    [
        ("succeeded", 1, 3, False, False, False, None),
        ("agent_failed", 1, 3, False, False, True, None),
        ("timed_out", 1, 3, False, False, True, None),
        ("interrupted", 1, 3, False, False, True, None),  # a cancel: never retried
        ("infra_failed", 1, 3, False, True, False, outcome.INFRA),
        ("infra_failed", 2, 3, False, True, False, outcome.INFRA),
        ("infra_failed", 3, 3, False, False, True, None),  # the last attempt's record is the result: alert once
        ("infra_failed", 1, 1, False, False, True, None),
        ("interrupted", 1, 3, True, True, False, outcome.SHUTDOWN),  # the worker stopped under it
        ("interrupted", 3, 3, True, True, False, outcome.SHUTDOWN),  # Temporal decides: no attempts left -> lost
        ("succeeded", 1, 3, True, False, False, None),  # finished before the shutdown reached it
        ("agent_failed", 1, 3, True, False, True, None),
    ],
)
def test_decide(status, attempt, attempts, shutdown, retry, alert, error_type):
    d = outcome.decide(status, attempt, attempts, shutdown)
    assert (d.retry, d.alert, d.error_type) == (retry, alert, error_type)


def test_alerts_once_over_a_run_of_infra_failures():
    alerts = [outcome.decide("infra_failed", n, 3, False).alert for n in (1, 2, 3)]
    assert alerts == [False, False, True]


@pytest.mark.parametrize(
    ("temporal", "record", "failure", "code"),
    [
        ("COMPLETED", {"exit_code": 0}, None, 0),
        ("COMPLETED", {"exit_code": 1}, None, 1),
        ("COMPLETED", {"exit_code": 4}, None, 4),
        ("CANCELED", None, None, 130),
        ("TERMINATED", None, None, 130),
        ("FAILED", None, "UsageError", 2),
        ("FAILED", None, "RunLost", 3),
        ("TIMED_OUT", None, None, 3),
    ],
)
def test_exit_codes(temporal, record, failure, code):
    assert outcome.exit_code(temporal, record, failure) == code


def test_usage_errors_are_never_retried_by_the_policy():
    policy = retry_policy(4)
    assert policy.maximum_attempts == 4
    assert policy.non_retryable_error_types == ["UsageError"]
    assert outcome.INFRA not in policy.non_retryable_error_types
