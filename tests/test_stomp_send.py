"""manage.py stomp_send: the send helpers from the command line."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from tests.support.records import remote_node

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args, stdin: str = "") -> str:
    out = io.StringIO()
    import sys

    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("stomp_send", *args, stdout=out)
    finally:
        sys.stdin = saved
    return out.getvalue().strip()


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


def test_bad_header_and_unknown_pk_are_clear_errors():
    with pytest.raises(CommandError, match="--header must be NAME:VALUE, not 'oops'"):
        run("--user", "x", "-H", "oops", "body")
    with pytest.raises(CommandError, match="no user with pk 4242"):
        run("--user", "4242", "--pk", "body")
