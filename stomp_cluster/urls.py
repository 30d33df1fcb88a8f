"""The package's HTTP endpoints, for operators: mount them once in your URLconf.

In your project's ``urls.py``::

    from django.urls import include, path

    urlpatterns = [
        ...,
        path("stomp/", include("stomp_cluster.urls")),
    ]

which serves ``/stomp/health/`` (:func:`stomp_cluster.views.health`) and
``/stomp/metrics/`` (:func:`stomp_cluster.views.metrics`, Prometheus). These two answer
only the addresses of ``ENDPOINTS_ALLOWED_NETWORKS`` (loopback by default) and refuse
others with 403. ``/stomp/publish/`` (:func:`stomp_cluster.publish.publish`) is the HTTP
publish API: off (404) until ``PUBLISH_API_KEYS`` lists a key, and then open to any
address that presents one. The names are namespaced: ``reverse("stomp_cluster:health")``,
``reverse("stomp_cluster:metrics")``, ``reverse("stomp_cluster:publish")``.
"""

from __future__ import annotations

from django.urls import path

from stomp_cluster import publish, views

__all__ = ["app_name", "urlpatterns"]

#: The URL namespace: ``reverse("stomp_cluster:health")``.
app_name = "stomp_cluster"

#: Mount with ``path("stomp/", include("stomp_cluster.urls"))``.
urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics, name="metrics"),
    path("publish/", publish.publish, name="publish"),
]
