"""URLs of the test and demo project."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from testproject import views

urlpatterns = [
    path("", views.demo, name="demo"),
    path("notify/", views.notify, name="notify"),
    path("login/", auth_views.LoginView.as_view(template_name="testproject/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/login/"), name="logout"),
    path("admin/", admin.site.urls),
]
