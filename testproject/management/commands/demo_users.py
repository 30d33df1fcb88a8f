"""Create the demo users (idempotent): alice, bob, carol and the superuser admin."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERS = ("alice", "bob", "carol")
PASSWORD = "stomp-demo"
ADMIN_PASSWORD = "stomp-admin"


class Command(BaseCommand):
    help = "Create users alice, bob and carol (password stomp-demo) and admin (stomp-admin)."

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        for name in USERS:
            user, created = model.objects.get_or_create(username=name)
            if created or not user.check_password(PASSWORD):
                user.set_password(PASSWORD)
                user.save()
        admin, created = model.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not admin.check_password(ADMIN_PASSWORD):
            admin.is_staff = admin.is_superuser = True
            admin.set_password(ADMIN_PASSWORD)
            admin.save()
        self.stdout.write("demo users: alice, bob, carol (stomp-demo); admin (stomp-admin)")
