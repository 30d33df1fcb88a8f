"""The protocol core must not depend on the outside world."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import stomp_cluster.protocol
import stomp_cluster.protocol.connection
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
