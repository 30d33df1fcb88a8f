"""The protocol core must not depend on the outside world."""

from __future__ import annotations

import subprocess
import sys

# Every module of the package, found rather than listed, so a new one is checked too.
SCRIPT = """
import importlib
import pkgutil
import sys
import stomp_cluster.protocol
modules = [info.name for info in pkgutil.walk_packages(
    stomp_cluster.protocol.__path__, "stomp_cluster.protocol."
)]
assert "stomp_cluster.protocol.connection" in modules, modules
for name in modules:
    importlib.import_module(name)
forbidden = sorted(
    name
    for name in sys.modules
    if name.split(".")[0] in ("asyncio", "django", "channels", "daphne", "twisted")
)
print(",".join(forbidden))
"""


def test_importing_the_protocol_loads_no_asyncio_django_or_channels():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
