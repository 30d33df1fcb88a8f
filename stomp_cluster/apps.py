"""App config: registers system checks, presence and account receivers and /app handlers.

It is also where the layers are wired together at startup: the signals' sender is the
consumer class, which the lower layers cannot import.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["StompClusterConfig"]


class StompClusterConfig(AppConfig):
    """The ``stomp_cluster`` app: wires itself up once Django's app registry is ready."""

    name = "stomp_cluster"
    verbose_name = "STOMP cluster"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here rather than at the top: Django imports this module before the
        # app registry is ready, and these modules reach the backends and the
        # handler modules of other apps, which may use models.
        from django.utils.module_loading import autodiscover_modules

        from stomp_cluster import signals
        from stomp_cluster.accounts import connect_receivers as connect_account_receivers
        from stomp_cluster.checks import check_channel_layer, check_settings
        from stomp_cluster.conf import DEFAULTS, user_settings
        from stomp_cluster.consumer import StompConsumer
        from stomp_cluster.presence.receivers import connect_receivers
        from stomp_cluster.roster import connect_receivers as connect_roster_receivers

        checks.register(check_settings, "stomp_cluster")
        checks.register(check_channel_layer, "stomp_cluster")
        # The wiring the lower layers cannot do themselves: they do not import the
        # consumer, which is the sender of every signal.
        signals.sender = StompConsumer
        connect_receivers()
        # Leaves of a lost node's sessions, in batches, on the sweeper that reaped them.
        connect_roster_receivers()
        # Sessions end when their user logs out, is deactivated or changes password.
        connect_account_receivers()
        # Read raw, not through get_settings(): a bad STOMP_CLUSTER must reach the
        # system checks, which report it, instead of raising here.
        module = user_settings().get("HANDLER_MODULE", DEFAULTS["HANDLER_MODULE"])
        if isinstance(module, str) and module:
            autodiscover_modules(module)
