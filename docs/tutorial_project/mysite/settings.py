"""The tutorial's settings: ``startproject``'s, plus what the installation page and the
tutorial add (the marked blocks are included in those pages).

``REDIS_URL`` in the environment turns the single node into a cluster (step 6 of the
tutorial); ``DATABASE_PATH`` moves the SQLite file, so that tests can share one between
nodes.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "tutorial-secret-key-not-for-production")
DEBUG = True
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DATABASE_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# [install-apps]
# settings.py: daphne first, so that runserver serves WebSockets; channels and
# stomp_cluster last.
INSTALLED_APPS = ["daphne", *INSTALLED_APPS, "channels", "stomp_cluster"]
ASGI_APPLICATION = "mysite.asgi.application"
# [/install-apps]

# [install-one-node]
# settings.py: one ASGI process. stomp_cluster's defaults keep everything in memory;
# the channel layer carries messages inside the process.
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
}
STOMP_CLUSTER = {}
# [/install-one-node]

# [tutorial-hook]
# settings.py: add the hook to the STOMP_CLUSTER you have.
STOMP_CLUSTER["PERMISSION_HOOK"] = "chat.permissions.stomp_permission"
# [/tutorial-hook]

if os.environ.get("REDIS_URL"):  # step 6 of the tutorial: run as a cluster
    # [install-cluster]
    # settings.py: a cluster on one Redis. The keys are added to STOMP_CLUSTER: assigning
    # a new dict would drop those you set before (such as the tutorial's PERMISSION_HOOK).
    import os  # at the top of settings.py, if it is not there yet

    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

    STOMP_CLUSTER |= {
        # One Redis for the whole cluster: the presence registry (who is connected
        # where), the message history (for clients that reconnect; Redis 7.0 or later)
        # and the nodes' inboxes (RedisTransport). Each can still be set on its own.
        "REDIS": REDIS_URL,
    }
    # [/install-cluster]
