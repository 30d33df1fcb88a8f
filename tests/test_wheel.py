"""The built wheel, installed alone into a clean venv, runs a two-node cluster.

Everything else in the suite imports ``stomp_cluster`` from the checkout, so it cannot see
what only a user who installs the package meets: a template or a migration left out of the
wheel, a dependency that the code imports but ``setup.cfg`` does not declare (``redis`` and
``msgpack`` used to arrive only through channels-redis), an extra that turned out not to be
optional.

A fast test reads the package's imports (AST, function-level ones included) and checks each
third-party one against ``setup.cfg``: in ``install_requires``, or in a user extra for an
optional feature. The slow ones (``cluster`` and ``slow``) build the sdist and, from it, the
wheel exactly as ``make dist`` does, from a clean copy of the checkout, and then:

1. check the wheel carries the templates, static files, migrations and ``py.typed``, and
   that ``twine check --strict`` accepts both files;
2. install the wheel with **no extras** into a venv made with ``python -m venv``, from a
   directory of dependency wheels and nothing else (``pip install --no-index
   --find-links``), so that a missing declaration fails the install; import every module
   of the installed package there (only a module of an optional feature may fail, and
   only for want of its extra's package);
3. generate a project with that venv's ``django-admin startproject``, configured as the
   installation page says for a cluster (presence, history and ``RedisTransport`` on one
   Redis), run its ``migrate`` and ``check``, start two daphne processes from the venv
   and show that a client on node B receives what a client on node A sends, and what
   ``manage.py stomp_send`` sends from the venv.

The dependency wheels are the lock's (``requirements/dev.txt``): the distributions the
wheel's requirements need are found by walking the metadata installed in this (locked)
environment, and ``pip download --require-hashes`` fetches exactly those files, from where
``make venv`` got them, PyPI or pip's cache. So the clean venv runs the versions the rest of
the suite runs, and needs the index only once, before it is made.

The processes of the clean venv get an environment without ``PYTHONPATH``, pip
configuration or Django settings of ours, and run outside the checkout, so nothing of the
repository can stand in for what the wheel lacks; the tests assert that ``stomp_cluster``
was imported from the venv. Every process they start (redis-server, two daphnes) is
stopped at the end, by its pid.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import email.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.clients import StompPyClient, unique
from tests.support.procs import RedisServer, free_port, wait_for_port
from tests.support.procs import run_command as run


def heavy(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test that builds, installs or runs the wheel: cluster, slow, 15 minutes."""
    for mark in (pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)):
        test = mark(test)
    return test


REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK = REPO_ROOT / "requirements" / "dev.txt"
PACKAGE = REPO_ROOT / "stomp_cluster"

# Imported by stomp_cluster but deliberately not declared, with the reason.
UNDECLARED = {
    # node.py imports twisted only when it runs inside daphne's reactor, and daphne (a
    # declared dependency) requires Twisted: under any other server it is never imported.
    "twisted": "daphne",
}
# Extras for developing this repository, not for users: the package may not import them.
DEVELOPMENT_EXTRAS = {"test", "docs", "demo"}
# What a node imports in the default and in the Redis configuration: install_requires, never
# an extra (redis and msgpack once came only through channels-redis).
CORE = {"django", "asgiref", "channels", "channels_redis", "redis", "msgpack"}

# What the wheel must carry besides Python modules: without them the admin pages, the live
# view, `migrate` and type checkers of projects that use the package break.
REQUIRED_DATA = (
    "stomp_cluster/py.typed",
    "stomp_cluster/migrations/0001_initial.py",
    "stomp_cluster/templates/admin/stomp_cluster/nodes.html",
    "stomp_cluster/templates/admin/stomp_cluster/connections.html",
    "stomp_cluster/static/stomp_cluster/admin.css",
    "stomp_cluster/static/stomp_cluster/live.js",
)


# -- helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One entry of the lock: its exact version and the hashes of its files."""

    version: str
    hashes: tuple[str, ...]


def read_lock(path: Path) -> dict[str, Pin]:
    """Parse ``uv pip compile --generate-hashes`` output: canonical name -> :class:`Pin`."""
    pins: dict[str, Pin] = {}
    name = version = None
    hashes: list[str] = []
    for line in [*path.read_text().splitlines(), ""]:
        entry = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)", line)
        if entry or not line.startswith(" "):
            if name is not None and version is not None:
                pins[canonicalize_name(name)] = Pin(version, tuple(hashes))
            name = version = None
            hashes = []
        if entry:
            name, version = entry.groups()
        hashes += re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
    return pins


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of *wheel* that apply without extras."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(name).decode())
    requirements = meta.get_all("Requires-Dist") or []
    return [
        line
        for line in requirements
        if (marker := Requirement(line).marker) is None or marker.evaluate({"extra": ""})
    ]


def installed_closure(requirements: Sequence[str]) -> dict[str, str]:
    """Canonical name -> installed version of every distribution *requirements* pull in.

    Walks the metadata installed in this environment (built from the lock), following
    extras (``twisted[tls]``) and evaluating environment markers as pip would here.
    """
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(line, "") for line in requirements]
    while todo:
        line, extra = todo.pop()
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        dist = metadata.distribution(requirement.name)
        found[name] = dist.version
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo += [(dep, wanted) for dep in dist.requires or []]
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """An environment for the clean venv's processes: nothing that points at our code.

    No ``PYTHONPATH`` (which would import ``stomp_cluster`` from the checkout), no virtualenv
    or Django settings of this process, and no pip configuration: the install may use the
    wheel directory it is given and nothing else.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "PIP_", "DJANGO_", "STOMP_"))
        and key not in {"VIRTUAL_ENV", "REDIS_URL"}
    }
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@dataclass
class Daphne:
    """A daphne process of the clean venv serving the generated project."""

    node_id: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after 15 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- fixtures ----------------------------------------------------------------------------------


# Left out of the copy the wheel is built from: outputs of earlier builds, caches, venvs.
# A stale stomp_cluster.egg-info matters most: setuptools reads its SOURCES.txt back into
# the next sdist, so a template that package_data no longer names would still be shipped.
BUILD_LEFTOVERS = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "node_modules",
    "_build",
    ".*_cache",
    ".hypothesis",
    ".coverage*",
    "htmlcov",
    "*.sqlite3",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built as ``make dist`` builds them, from a clean copy."""
    source = tmp_path_factory.mktemp("source") / "stomp-cluster"
    shutil.copytree(REPO_ROOT, source, ignore=BUILD_LEFTOVERS)
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the locked setuptools and wheel of this environment, no index.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, "."], cwd=source)
    (wheel,) = out.glob("stomp_cluster-*.whl")
    (sdist,) = out.glob("stomp_cluster-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv made with ``python -m venv`` holding the wheel, no extras, and its dependencies.

    Returns the venv's ``bin`` directory.
    """
    base = tmp_path_factory.mktemp("clean")
    wheel = dist["wheel"]
    lock = read_lock(LOCK)
    needed = installed_closure(wheel_requirements(wheel))
    unlocked = sorted(set(needed) - set(lock))
    assert not unlocked, f"needed by the wheel but not in the lock (run `make lock`): {unlocked}"
    stale = {
        name: f"{version} installed, {lock[name].version} locked"
        for name, version in needed.items()
        if version != lock[name].version
    }
    assert not stale, f"this environment is not the lock's (run `make venv`): {stale}"

    requirements = base / "requirements.txt"
    requirements.write_text(
        "".join(
            f"{name}=={lock[name].version} "
            + " ".join(f"--hash=sha256:{digest}" for digest in lock[name].hashes)
            + "\n"
            for name in sorted(needed)
        )
    )
    wheels = base / "wheels"
    # The lock's files and no others (--require-hashes), wheels only, so that the clean
    # venv builds nothing and needs no index.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--dest",
            wheels,
            "-r",
            requirements,
        ],
        timeout=600,
    )
    env_dir = base / "venv"
    # From a venv's python, `-m venv` builds on the base interpreter: nothing of ours leaks.
    run([sys.executable, "-m", "venv", env_dir])
    bin_dir = env_dir / "bin"
    run(
        [
            bin_dir / "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            wheels,
            wheel,
        ],
        cwd=base,
        env=clean_env(),
        timeout=600,
    )
    return bin_dir


# Run by the clean venv in the generated project: import every module of the installed
# package and report what it could not import, and why.
IMPORT_EVERY_MODULE = """
import importlib, importlib.util, json, pkgutil, sys
import django

django.setup()
import stomp_cluster

imported, missing = [], {}
for info in pkgutil.walk_packages(stomp_cluster.__path__, "stomp_cluster."):
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("stomp_cluster"):
            raise
        missing[info.name] = (exc.name or "").partition(".")[0]
    else:
        imported.append(info.name)
json.dump(
    {
        "file": stomp_cluster.__file__,
        "uvicorn": importlib.util.find_spec("uvicorn") and "found",
        "imported": imported,
        "missing": missing,
    },
    sys.stdout,
)
"""

SETTINGS = """

# -- added by tests/test_wheel.py, as docs/intro/installation.rst says for a cluster --------
import os  # noqa: E402

INSTALLED_APPS += ["channels", "stomp_cluster"]
ASGI_APPLICATION = "smoke.asgi.application"

REDIS_URL = {redis_url!r}
STOMP_CLUSTER = {{
    "NODE_ID": os.environ.get("SMOKE_NODE_ID") or None,
    "TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport",
    "TRANSPORT_OPTIONS": {{"hosts": [REDIS_URL]}},
    "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
    "PRESENCE_OPTIONS": {{"hosts": [REDIS_URL]}},
    "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
    "HISTORY_OPTIONS": {{"hosts": [REDIS_URL]}},
}}
"""

ASGI = """\
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smoke.settings")
django_asgi_app = get_asgi_application()

# Import after get_asgi_application(), which sets Django up.
from channels.routing import ProtocolTypeRouter, URLRouter

import stomp_cluster.routing

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(stomp_cluster.routing.websocket_urlpatterns),
    }
)
"""


def manage(venv: Path, project: Path, *args: str) -> str:
    """``python manage.py ARGS`` of the generated project, with the clean venv."""
    return run([venv / "python", "manage.py", *args], cwd=project, env=clean_env())


@pytest.fixture(scope="module")
def project(
    venv: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A fresh ``startproject smoke`` of the clean venv, set up for a cluster on our Redis.

    Migrated, and passing ``manage.py check`` without a warning.
    """
    redis_server.ensure_running()  # the suite's server: an earlier test may have stopped it
    root = tmp_path_factory.mktemp("project")
    run([venv / "django-admin", "startproject", "smoke", root], cwd=root, env=clean_env())
    settings = root / "smoke" / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS.format(redis_url=redis_server.url))
    (root / "smoke" / "asgi.py").write_text(ASGI)
    manage(venv, root, "migrate", "--noinput")  # the wheel's migrations, Django's tables
    manage(venv, root, "check", "--fail-level", "WARNING")
    return root


@pytest.fixture
def nodes(venv: Path, project: Path) -> Iterator[list[Daphne]]:
    """node-a and node-b: two daphne processes of the clean venv on the one Redis."""
    started: list[Daphne] = []
    try:
        for node_id in ("node-a", "node-b"):
            port = free_port()
            log = project / f"{node_id}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [venv / "daphne", "-b", "127.0.0.1", "-p", str(port), "smoke.asgi:application"],
                    cwd=project,
                    env=clean_env(DJANGO_SETTINGS_MODULE="smoke.settings", SMOKE_NODE_ID=node_id),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append(Daphne(node_id, port, log, proc))
        for node in started:
            try:
                wait_for_port(node.port, timeout=60, proc=node.proc)
            except (RuntimeError, TimeoutError) as exc:
                pytest.fail(f"{node.node_id} did not start: {exc}\n{node.log_tail()}")
        yield started
    finally:
        for node in started:
            node.stop()


def third_party_imports() -> set[str]:
    """The top-level modules outside the standard library that stomp_cluster imports.

    Imports at module level and inside functions alike; those under ``if TYPE_CHECKING:``
    never run and are left out, and so are relative imports.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                found.add(child.module.partition(".")[0])
            visit(child)

    for path in sorted(PACKAGE.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)))
    return found - set(sys.stdlib_module_names) - {"stomp_cluster", "__future__"}


def declared_requirements() -> tuple[set[str], set[str]]:
    """Canonical names in setup.cfg: (install_requires, the extras meant for users)."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")

    def names(value: str) -> set[str]:
        return {canonicalize_name(Requirement(line).name) for line in value.split()}

    extras = config["options.extras_require"]
    optional = set().union(*(names(extras[key]) for key in extras if key not in DEVELOPMENT_EXTRAS))
    return names(config["options"]["install_requires"]), optional


# -- tests -------------------------------------------------------------------------------------


def test_every_package_the_code_imports_is_declared():
    """Each third-party import is a declared dependency, not one that arrives by chance.

    A package may come from a user extra (an optional feature): the clean-venv test below
    then shows that only the modules of that feature need it.
    """
    required, optional = declared_requirements()
    distributions = metadata.packages_distributions()
    imported = third_party_imports()
    problems = []
    for module in sorted(imported):
        if module in UNDECLARED:
            assert canonicalize_name(UNDECLARED[module]) in required, module
            continue
        dists = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not dists & (required | optional):
            problems.append(f"{module} (from {sorted(dists) or 'nothing installed'})")
        elif module in CORE and not dists & required:
            problems.append(f"{module} (in an extra, but needed by every node)")
    assert not problems, f"imported but not declared in install_requires: {problems}"
    # The check sees what it should, among them the imports that once came only by chance.
    assert imported >= CORE


@heavy
def test_the_wheel_carries_templates_static_files_migrations_and_py_typed(dist):
    with zipfile.ZipFile(dist["wheel"]) as archive:
        names = set(archive.namelist())
    missing = [name for name in REQUIRED_DATA if name not in names]
    assert not missing, f"not in {dist['wheel'].name}: {missing}"
    # Nothing of the repository's own: the suite and the test project stay out.
    assert not [n for n in names if n.startswith(("tests/", "testproject/"))]
    run([sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"]])


@heavy
def test_every_module_of_the_wheel_imports_without_extras(venv, project):
    report = json.loads(
        run(
            [venv / "python", "-c", IMPORT_EVERY_MODULE],
            cwd=project,
            env=clean_env(DJANGO_SETTINGS_MODULE="smoke.settings"),
        )
    )
    assert Path(report["file"]).is_relative_to(venv.parent), f"imported from {report['file']}"
    assert report["uvicorn"] is None, "uvicorn is an extra: a plain install must not bring it"
    assert len(report["imported"]) > 30, report  # the walk found the package's modules
    assert "stomp_cluster.presence.redis" in report["imported"]
    # A module may fail only for want of a package that a user extra provides.
    required, optional = declared_requirements()
    distributions = metadata.packages_distributions()
    unexplained = {
        module: missing
        for module, missing in report["missing"].items()
        if not {canonicalize_name(d) for d in distributions.get(missing, [])} & optional - required
    }
    assert not unexplained, f"modules that do not import from the wheel: {unexplained}"


@heavy
def test_two_daphne_nodes_from_the_wheel_deliver_across_nodes(venv, project, nodes):
    node_a, node_b = nodes
    topic = f"/topic/{unique('wheel')}"
    receiver = StompPyClient(node_b.ws_url)
    sender = StompPyClient(node_a.ws_url)
    try:
        receiver.connect()
        receiver.subscribe(topic)  # waits for the RECEIPT: the subscription is registered
        sender.connect()

        # A SEND handled by node A's process reaches node B through RedisTransport.
        sender.send(topic, "from node-a", receipt=True)
        assert (
            receiver.wait_for_message(lambda m: m.body == "from node-a").headers["destination"]
            == topic
        ), node_b.log_tail()

        # A send from a management command of the clean venv, a process of neither node.
        out = manage(venv, project, "stomp_send", "--destination", topic, "from stomp_send")
        assert "reached 1 session(s) on 1 node(s)" in out
        receiver.wait_for_message(lambda m: m.body == "from stomp_send")

        listing = manage(venv, project, "stomp_cluster", "nodes")
        assert "node-a" in listing and "node-b" in listing, listing
    finally:
        sender.close()
        receiver.close()
    for node in nodes:
        assert node.proc.poll() is None, f"{node.node_id} died:\n{node.log_tail()}"
