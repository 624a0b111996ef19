"""The server's limits and waits that the client must know, so it can refuse a value before sending
it (hookctl's options) and give each call a deadline longer than the server may take to answer.

hookd-client does not depend on the server's packages, so these are copies of the constants named
next to each; tests/test_hookctl.py compares them with the originals, so a change on the server
that is not made here too fails the tests.
"""

from __future__ import annotations

#: A webhook's time allowed per request (``hookd.engine.validation.MIN_TIMEOUT_S``, ``MAX_TIMEOUT_S``).
MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = 30.0
#: Most requests per second a webhook may set (``hookd.engine.validation.MAX_RATE_LIMIT``); 0 is
#: the server's default, and values between 0 and ``MIN_RATE_LIMIT`` are refused.
MIN_RATE_LIMIT = 0.1
MAX_RATE_LIMIT = 100_000.0
#: Longest a rotated-out signing secret may keep signing (``hookd.engine.core.MAX_GRACE_S``).
MAX_GRACE_S = 7 * 24 * 3600.0
#: Shortest interval between health snapshots (``hookd.server.servicer.MIN_HEALTH_INTERVAL_S``;
#: shorter ones are raised to it).
MIN_HEALTH_INTERVAL_S = 0.1
#: How long TestWebhook waits for a request slot at a busy destination, beyond two request
#: timeouts (``hookd.engine.core.PING_QUEUE_WAIT_S``).
PING_QUEUE_WAIT_S = 10.0

#: The longest TestWebhook waits on the server for its ping's attempt (``Engine.test_webhook``):
#: two timeouts of the slowest webhook allowed, then the wait for a slot. Worked out for the
#: largest timeout rather than the webhook's own, which the client would have to read first.
TEST_WEBHOOK_WAIT_S = 2 * MAX_TIMEOUT_S + PING_QUEUE_WAIT_S
#: Allowed beyond a server-side wait for the rest of the call: reading the webhook, writing the
#: ping and reading its attempt back through a busy store, and the network.
CALL_MARGIN_S = 15.0
#: TestWebhook's deadline: past the server's own bound, so the server's answer (the attempt, or
#: UNAVAILABLE when no slot came free) always arrives before the client gives up.
TEST_WEBHOOK_DEADLINE_S = TEST_WEBHOOK_WAIT_S + CALL_MARGIN_S
