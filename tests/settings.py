"""Settings for the in-process tests: the test project, single node, in memory."""

from testproject.settings import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STOMP_CLUSTER = {
    "NODE_ID": "test-node",
    "PRESENCE_BACKEND": "stomp_cluster.presence.memory.MemoryPresence",
    "PASSWORD_LOGIN": True,
}
