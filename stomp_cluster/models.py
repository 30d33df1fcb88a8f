"""Placeholder models for the admin pages: permissions and URLs, with no table.

Live connections and nodes are read from the presence registry (see
:mod:`stomp_cluster.presence`), never copied into the database. These unmanaged models
exist only so that Django creates their permissions and the admin gives them URLs and a
place on its index page, as django-constance does for its settings page. No migration
creates a table for them, and nothing queries them: :mod:`stomp_cluster.admin` reads the
registry instead.
"""

from __future__ import annotations

from django.db import models

__all__ = ["Connection", "Node"]


class Connection(models.Model):
    """One live STOMP session, as listed on the admin's "Live connections" page.

    Permissions: ``stomp_cluster.view_connection`` to see the page, and
    ``stomp_cluster.disconnect_connection`` to close sessions from it. Instances are
    never saved; the admin builds unsaved ones only to write :class:`LogEntry
    <django.contrib.admin.models.LogEntry>` rows, whose ``object_id`` is the session id.
    """

    session_id = models.CharField("session id", max_length=64, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("disconnect_connection", "Can disconnect live connections")]
        verbose_name = "live connection"
        verbose_name_plural = "live connections"

    def __str__(self) -> str:
        return f"session {self.session_id}"


class Node(models.Model):
    """One cluster node, as listed on the admin's "Nodes" page.

    Permission: ``stomp_cluster.view_node``.
    """

    node_id = models.CharField("node id", max_length=200, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "node"
        verbose_name_plural = "nodes"

    def __str__(self) -> str:
        return f"node {self.node_id}"
