"""Print a connection token for a user, to use as the CONNECT passcode."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext

from stomp_cluster.tokens import connection_token

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Print a signed connection token: CONNECT with login=USERNAME, passcode=TOKEN."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--max-age", type=int, default=None, help="lifetime in seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["username"])
        except model.DoesNotExist as exc:
            raise CommandError(
                gettext("no user named %(name)r") % {"name": options["username"]}
            ) from exc
        self.stdout.write(connection_token(user, max_age=options["max_age"]))
