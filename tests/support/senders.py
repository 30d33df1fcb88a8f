"""Sender processes for fault tests: a process of its own (no node) that sends and says
what each send returned.

Every line of its output is ``acknowledged <n>`` (the send returned) or ``failed <n>
<exception>`` (it raised to the caller), so that a test can tell what the caller was
told from what the clients got. The output goes to files, so that a test can read it
while the process runs (the child's output is unbuffered) and a full pipe can never
block it.

Two senders: :func:`stream`, the testproject's ``stream_to_user`` command (numbered
messages to one user or, with ``--topic``, a destination), and :func:`send_in_turn`,
which sends message *n* to ``users[n % len(users)]`` through ``asend_to_user``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.nodes import REPO_ROOT, server_env

__all__ = ["SEND_IN_TURN", "SenderProcess", "send_in_turn", "stream"]

# Message n goes to USERS[n % len(USERS)]; one line per send says what the caller saw.
SEND_IN_TURN = """
import asyncio, sys, time
import django
django.setup()
from stomp_cluster import asend_to_user

async def main(first, count, rate, users, queue):
    started = time.monotonic()
    for i in range(count):
        n = first + i
        try:
            await asend_to_user(users[n % len(users)], queue, str(n))
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}".replace(chr(10), " ")
            print(f"failed {n} {text}", flush=True)
        else:
            print(f"acknowledged {n}", flush=True)
        await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(","),
                 sys.argv[5]))
"""


class SenderProcess:
    """A running sender; its output says what each send returned.

    Args:
        args: the Python interpreter's arguments (``-m django ...`` or ``-c SCRIPT ...``).
        env: the process's environment (see :func:`~tests.support.nodes.server_env`).
        directory: where its output files go.
        name: the output files' stem.
    """

    def __init__(
        self, args: Sequence[str], env: Mapping[str, str], directory: Path, name: str = "sender"
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.out_path = directory / f"{name}.out"
        self.err_path = directory / f"{name}.err"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO_ROOT,
                env=dict(env),
                stdout=out,
                stderr=err,
                text=True,
            )

    def output(self) -> str:
        return self.out_path.read_text()

    def lines(self) -> list[list[str]]:
        return [line.split(maxsplit=2) for line in self.output().splitlines() if line]

    def acknowledged(self) -> set[int]:
        """The sends that returned so far."""
        return {int(parts[1]) for parts in self.lines() if parts[0] == "acknowledged"}

    def failed(self) -> dict[int, str]:
        """The sends that raised so far, with what they raised."""
        return {
            int(parts[1]): parts[2] if len(parts) > 2 else ""
            for parts in self.lines()
            if parts[0] == "failed"
        }

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self, timeout: float) -> str:
        """Wait for a clean exit and return the output."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()  # ours, by its pid
                self.proc.wait()
        assert self.proc.returncode == 0, self.err_path.read_text()[-3000:]
        return self.output()


def stream(
    tmp_path: Path,
    db_path: str | os.PathLike[str],
    redis_url: str,
    user: str,
    count: int,
    rate: float = 0,
    *extra: str,
) -> SenderProcess:
    """Start ``stream_to_user`` sending *count* messages to *user* at *rate* per second.

    With ``--report`` among *extra*, each send's outcome is a line of its output.
    """
    env = server_env(
        db_path=db_path,
        redis_url=redis_url,
        node_id="sender",
        extra={"STOMP_HISTORY_MAX_LENGTH": "20000"},
    )
    args = ["-m", "django", "stream_to_user", user, str(count), "--rate", str(rate), *extra]
    return SenderProcess(args, env, tmp_path / "sender")


def send_in_turn(
    directory: Path,
    env: Mapping[str, str],
    *,
    first: int,
    count: int,
    rate: float,
    users: Sequence[str],
    queue: str,
) -> SenderProcess:
    """Start :data:`SEND_IN_TURN`: messages *first*.. to *users* in turn on *queue*."""
    args = ["-c", SEND_IN_TURN, str(first), str(count), str(rate), ",".join(users), queue]
    return SenderProcess(args, env, directory, f"sender-{first}")
