"""URLs of the test and demo project."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from testproject import views

urlpatterns = [
    path("", views.demo, name="demo"),
    path("online/", views.online, name="online"),
    path("notify/", views.notify, name="notify"),
    path("notify/form/", views.notify_form, name="notify_form"),
    path(
        "login/", auth_views.LoginView.as_view(template_name="testproject/login.html"), name="login"
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="/login/"), name="logout"),
    path("admin/", admin.site.urls),
    # The package's endpoints for operators: /stomp/health/.
    path("stomp/", include("stomp_cluster.urls")),
]

# The demo and the browser tests run plain daphne, which serves no static files: with
# DEBUG on (the project's default), let Django serve them (the admin's CSS, stomp.js).
urlpatterns += staticfiles_urlpatterns()
