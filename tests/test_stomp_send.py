"""manage.py stomp_send: the send helpers from the command line."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from tests.support.records import remote_node

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args, stdin: str = "", err: io.StringIO | None = None) -> str:
    out = io.StringIO()
    import sys

    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("stomp_send", *args, stdout=out, stderr=err or io.StringIO())
    finally:
        sys.stdin = saved
    return out.getvalue().strip()


IN_MEMORY_WARNING = (
    "warning: stomp_cluster sends with the in-memory presence backend and no node runs in "
    "this process: nothing outside this process can receive this message. Set "
    "STOMP_CLUSTER['REDIS'] so that sends reach the nodes of a cluster."
)


def test_to_a_user_with_headers_and_body_from_stdin():
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async_to_sync(remote_node)("far", "specific.far!z", user="wendy", destination="/user/queue/n")
    assert run(
        "--user", "wendy", "--to", "/queue/n", "-H", "x-kind: alert", stdin="from stdin"
    ) == ("reached 1 session(s) on 1 node(s)")
    message = async_to_sync(get_channel_layer().receive)("specific.far!z")
    assert message["body"] == b"from stdin"
    assert ("x-kind", "alert") in message["headers"]


def test_to_nobody_is_not_an_error():
    assert run("--destination", "/topic/void", "hello") == "reached 0 session(s) on 0 node(s)"


def test_with_the_in_memory_registry_it_says_that_nobody_outside_can_receive():
    err = io.StringIO()
    assert run("--destination", "/topic/void", "hello", err=err) == (
        "reached 0 session(s) on 0 node(s)"
    )
    assert err.getvalue().strip() == IN_MEMORY_WARNING


def test_no_warning_when_the_send_is_refused_before_it_reaches_the_registry():
    err = io.StringIO()
    with pytest.raises(CommandError, match="no user with pk 4242"):
        run("--user", "4242", "--pk", "body", err=err)
    assert err.getvalue() == ""  # the user lookup failed before the send
    with pytest.raises(CommandError, match="is a user destination"):
        run("--destination", "/user/queue/x", "body", err=err)
    assert err.getvalue() == ""  # refused before the registry was asked


def test_bad_header_and_unknown_pk_are_clear_errors():
    with pytest.raises(CommandError, match="--header must be NAME:VALUE, not 'oops'"):
        run("--user", "x", "-H", "oops", "body")
    with pytest.raises(CommandError, match="no user with pk 4242"):
        run("--user", "4242", "--pk", "body")
