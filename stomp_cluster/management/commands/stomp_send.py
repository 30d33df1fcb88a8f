"""Send a STOMP message from the command line, through the same helpers as views.

The command is a process of its own, never a node: with the in-memory presence backend
its registry is empty and what it sends reaches nobody. The send helpers warn about it
(a ``UserWarning``), and the command prints that warning to standard error, where a
person running it sees it whatever the warning filters say.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext

from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.send import send_to_destination, send_to_session, send_to_user

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Send a message to a user, a session or a destination on whichever node holds "
        "them. The body is BODY, or standard input when BODY is '-' or missing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--user", help="username (or pk with --pk)")
        target.add_argument("--session", help="session id (the CONNECTED session header)")
        target.add_argument("--destination", help="broker destination, e.g. /topic/news")
        parser.add_argument("--pk", action="store_true", help="--user is a primary key")
        parser.add_argument(
            "--to",
            default="/queue/notify",
            help="destination for --user/--session (default /queue/notify)",
        )
        parser.add_argument("--header", "-H", action="append", default=[], metavar="NAME:VALUE")
        parser.add_argument("--content-type", default=None)
        parser.add_argument("body", nargs="?", default="-")

    def handle(self, *args: Any, **options: Any) -> None:
        body = sys.stdin.read() if options["body"] == "-" else options["body"]
        headers: dict[str, str] = {}
        for item in options["header"]:
            name, sep, value = item.partition(":")
            if not sep or not name:
                raise CommandError(
                    gettext("--header must be NAME:VALUE, not %(item)r") % {"item": item}
                )
            headers[name.strip()] = value.strip()
        ctype = options["content_type"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                if options["user"] is not None:
                    user: Any = int(options["user"]) if options["pk"] else options["user"]
                    delivery = send_to_user(user, options["to"], body, headers, ctype)
                elif options["session"] is not None:
                    delivery = send_to_session(
                        options["session"], options["to"], body, headers, ctype
                    )
                else:
                    delivery = send_to_destination(options["destination"], body, headers, ctype)
            except (DeliveryFailed, LookupError, ValueError) as exc:
                raise CommandError(str(exc)) from exc
            finally:
                for warning in caught:
                    self.stderr.write(f"warning: {warning.message}")
        # One sentence with two counts: "(s)" reads right for both, in one translatable
        # string, where ngettext can follow only one of them.
        self.stdout.write(
            gettext("reached %(sessions)d session(s) on %(nodes)d node(s)")
            % {"sessions": delivery.sessions, "nodes": delivery.nodes}
        )
