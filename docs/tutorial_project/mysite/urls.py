"""The tutorial's URLs (step 4)."""

from django.contrib import admin
from django.urls import include, path

from chat import views

urlpatterns = [
    path("admin/", admin.site.urls),
    # Django's login and logout views, at the LOGIN_URL they default to (/accounts/login/).
    path("accounts/", include("django.contrib.auth.urls")),
    path("chat/", views.room, name="room"),
    path("chat/notify/", views.notify, name="notify"),
]
