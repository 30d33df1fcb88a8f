"""The documentation runs: its code is the code we test, and its API reference is complete.

Three kinds of checks:

* **The API reference and ``__all__`` agree.** We build the docs with Sphinx into a
  temporary directory and read the object inventory it writes (``objects.inv``, the list
  of everything the pages document). Every module of the package is either documented
  (it is in the inventory) or named in the "Internal modules" list at the end of
  ``docs/reference/api.rst``. Every name in a documented module's ``__all__`` is in the
  inventory, under that module or, for a re-export, as the same object under the module
  that defines it; every documented name exists and, at module level, is in its module's
  ``__all__``. The re-exported functions of ``stomp_cluster``, whose signatures
  ``api.rst`` writes by hand, take the parameters the functions take.
* **The tutorial's project works** (``docs/tutorial_project/``, whose files the tutorial,
  the installation page and the testing guide include): it passes ``manage.py check`` with
  one node and as a cluster, its own tests pass (those of the testing guide), and its
  handler and permission hook let the chat through while refusing direct SENDs (the hook
  once refused every SEND, ``/app/`` ones included, which broke the chat).
* **The installation page, followed literally** (``cluster`` and ``slow``): a fresh
  ``django-admin startproject`` gets the page's settings blocks, ``asgi.py`` and commands
  in the page's order, then one daphne node on a Redis of ours serves a STOMP client, and
  a send from ``manage.py shell`` reaches it through Redis.
* **The tutorial, run as its step 6 runs it** (``cluster`` and ``slow``): two daphne nodes
  of the tutorial's project on one Redis; alice and bob log in through the login page of
  step 0, their WebSockets carry the session cookie, a chat message sent to the handler on
  one node reaches both, and the notify view on alice's node reaches bob on the other.
"""

from __future__ import annotations

import functools
import http.cookiejar
import importlib
import inspect
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import override_settings

import stomp_cluster
from stomp_cluster import connection_token
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from tests.support.clients import RawStompClient, unique
from tests.support.procs import RedisServer, free_port, run_command, wait_for_port

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
TUTORIAL = DOCS / "tutorial_project"
API_RST = DOCS / "reference" / "api.rst"
INSTALLATION_RST = DOCS / "intro" / "installation.rst"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Our environment for a child process, minus what would point it elsewhere.

    The worktree comes first on ``PYTHONPATH``, so the child imports this checkout's
    ``stomp_cluster`` even where another one is installed.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_PATH", "STOMP_NODE_ID"}
    }
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    return run_command(args, cwd=cwd, env=env, timeout=timeout)


# -- the API reference ---------------------------------------------------------------


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every Python object the built docs document: ``{dotted name: role}``."""
    pytest.importorskip("sphinx")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path_factory.mktemp("docs")
    run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-b",
            "html",
            "-q",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        timeout=300,
    )
    with open(out / "html" / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    return {
        name: role
        for role, entries in inv.items()
        if role.startswith("py:")
        for name in entries
        if name == "stomp_cluster" or name.startswith("stomp_cluster.")
    }


def internal_modules() -> set[str]:
    """The modules that ``api.rst`` lists as internal."""
    text = API_RST.read_text()
    section = text.split("\nInternal modules\n", 1)[1]
    return set(re.findall(r"^\* ``(stomp_cluster[\w.]*)``", section, re.M))


def package_modules() -> list[str]:
    names = ["stomp_cluster"]
    for info in pkgutil.walk_packages(stomp_cluster.__path__, "stomp_cluster."):
        if ".migrations" not in info.name:
            names.append(info.name)
    return names


def resolve(name: str) -> Any:
    """Import the object at dotted *name*: the longest importable module, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def test_every_module_is_documented_or_listed_as_internal(inventory):
    internal = internal_modules()
    for name in internal:
        importlib.import_module(name)  # a listed module exists
    for name in package_modules():
        module = importlib.import_module(name)
        if not getattr(module, "__all__", None):
            continue  # a package with nothing of its own (presence/, history/, ...)
        documented = inventory.get(name) == "py:module"
        assert documented != (name in internal), (
            f"{name} must be either documented in the API reference or listed under "
            "'Internal modules' in docs/reference/api.rst, not both"
        )


def test_every_public_name_is_in_the_api_reference(inventory):
    # A re-export counts when the object it names is documented under another module.
    documented_objects = []
    for name in inventory:
        try:
            documented_objects.append(resolve(name))
        except (ImportError, AttributeError):
            pass
    missing = []
    for name in package_modules():
        if inventory.get(name) != "py:module":
            continue
        module = importlib.import_module(name)
        for public in module.__all__:
            if f"{name}.{public}" in inventory:
                continue
            obj = getattr(module, public)
            if not any(obj is other for other in documented_objects):
                missing.append(f"{name}.{public}")
    assert missing == [], "in __all__ but not in the API reference"


def declares(cls: type, attr: str) -> bool:
    """Whether *cls* gives its instances *attr*: an annotation, a slot, or ``self.attr =``."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "stomp_cluster":
            continue
        if attr in vars(klass).get("__annotations__", {}) or attr in vars(klass).get(
            "__slots__", ()
        ):
            return True
        if re.search(rf"\bself\.{attr}\b\s*(:[^=]*)?=", inspect.getsource(klass)):
            return True
    return False


def test_every_documented_name_exists_and_is_public(inventory):
    not_public = []
    for name, role in inventory.items():
        owner, _, attr = name.rpartition(".")
        if role == "py:attribute" and isinstance(resolve(owner), type):
            if declares(resolve(owner), attr):
                continue  # an instance attribute, such as a dataclass field
        obj = resolve(name)  # raises if the docs name something that is not there
        if role == "py:module":
            continue
        module_name, _, attr = name.rpartition(".")
        if inventory.get(module_name) != "py:module":
            continue  # a method or attribute of a class
        if module_name in sys.modules and inspect.ismodule(obj):
            continue
        module = sys.modules[module_name]
        if attr not in getattr(module, "__all__", ()):
            not_public.append(name)
    assert not_public == [], "documented, but not in its module's __all__"


def test_hand_written_signatures_of_the_reexports_match_the_functions():
    text = API_RST.read_text().split("\n``stomp_cluster.send``\n", 1)[0]
    written = re.findall(r"^\.\. py:function:: (\w+)\((.*)\)$", text, re.M)
    assert len(written) > 10
    for name, params in written:
        names = [p.strip().split("=")[0] for p in params.split(",") if p.strip()]
        names = [n for n in names if n != "*"]
        real = [p.name for p in inspect.signature(getattr(stomp_cluster, name)).parameters.values()]
        assert names == real, name


# -- the tutorial's project ------------------------------------------------------------


@pytest.mark.parametrize("redis_url", ["", "redis://127.0.0.1:1/0"])
def test_tutorial_project_passes_check(tmp_path, redis_url):
    extra = {"DATABASE_PATH": str(tmp_path / "db.sqlite3")}
    if redis_url:
        extra["REDIS_URL"] = redis_url  # a cluster; check opens no connection
    out = run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=TUTORIAL,
        env=subprocess_env(**extra),
    )
    assert "no issues" in out


def test_tutorial_cluster_block_keeps_the_permission_hook(tmp_path):
    code = (
        "from stomp_cluster.conf import get_settings; s = get_settings(); "
        "print(s.PERMISSION_HOOK, s.TRANSPORT_BACKEND)"
    )
    out = run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=TUTORIAL,
        env=subprocess_env(
            DJANGO_SETTINGS_MODULE="mysite.settings", REDIS_URL="redis://127.0.0.1:1/0"
        ),
    )
    assert out.split() == [
        "chat.permissions.stomp_permission",
        "stomp_cluster.transport.RedisTransport",
    ]


def test_tutorial_project_tests_pass(tmp_path):
    # The tests that docs/howto/testing.rst includes, under the project's own settings
    # (docs/tutorial_project/pytest.ini), in a process of their own.
    out = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "chat/tests"],
        cwd=TUTORIAL,
        env=subprocess_env(DATABASE_PATH=str(tmp_path / "db.sqlite3")),
    )
    assert re.search(r"\b5 passed\b", out), out


@pytest.fixture
def tutorial_chat(monkeypatch, handlers) -> Iterator[None]:
    """The tutorial's ``chat`` app importable, its handler registered, then forgotten."""
    monkeypatch.syspath_prepend(str(TUTORIAL))
    importlib.import_module("chat.stomp_handlers")
    yield
    for name in [m for m in sys.modules if m == "chat" or m.startswith("chat.")]:
        del sys.modules[name]


@pytest.mark.django_db(transaction=True)
@override_settings(STOMP_CLUSTER={"PERMISSION_HOOK": "chat.permissions.stomp_permission"})
async def test_tutorial_chat_goes_through_the_handler_and_the_hook(tutorial_chat):
    from testproject.asgi import application

    model = get_user_model()
    alice = await database_sync_to_async(model.objects.create_user)("alice", password="pw")
    token = await sync_to_async(connection_token)(alice)
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp({"login": "alice", "passcode": token})
    await client.send_frame(
        "SUBSCRIBE", {"id": "0", "destination": "/topic/chat.lobby", "receipt": "r0"}
    )
    assert (await client.receive_frame()).command is Command.RECEIPT

    # Step 1's chat, with step 2's hook in place: the /app/ SEND is allowed...
    await client.send_frame("SEND", {"destination": "/app/chat/lobby"}, "  hello  ")
    frame = await client.receive_frame()
    assert frame.command is Command.MESSAGE
    assert frame.get("content-type") == "application/json"
    assert json.loads(frame.body) == {"user": "alice", "text": "hello"}

    # ... and a direct SEND to the topic is refused.
    await client.send_frame("SEND", {"destination": "/topic/chat.lobby"}, "spoofed")
    frame = await client.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "permission denied: cannot send to /topic/chat.lobby"
    assert await client.receive_close() == 1000


@pytest.mark.django_db(transaction=True)
@override_settings(STOMP_CLUSTER={"PERMISSION_HOOK": "chat.permissions.stomp_permission"})
async def test_tutorial_hook_refuses_anonymous_subscriptions(tutorial_chat):
    from testproject.asgi import application

    client = StompCommunicator(application, "/ws")
    await client.connect_stomp()
    await client.send_frame("SUBSCRIBE", {"id": "0", "destination": "/topic/chat.lobby"})
    frame = await client.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "permission denied: cannot subscribe to /topic/chat.lobby"


# -- the installation page, followed literally -----------------------------------------

DIRECTIVE = re.compile(r"^\.\. (literalinclude|code-block)::\s*(\S+)\s*$")


def page_steps(path: Path) -> list[tuple[str, str]]:
    """The page's code in order: ``("settings", text)``, ``("file", text)``, ``("sh", line)``.

    ``literalinclude`` blocks of the tutorial project's ``settings.py`` are settings to
    append; a Python ``code-block`` whose first line names a file (``# mysite/asgi.py``) is
    that file; each ``python manage.py`` line of a ``sh`` block is a command to run.
    """
    lines = path.read_text().splitlines()
    steps: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        match = DIRECTIVE.match(lines[i])
        i += 1
        if not match:
            continue
        kind, arg = match.groups()
        options: dict[str, str] = {}
        while i < len(lines) and lines[i].startswith("   :"):
            key, _, value = lines[i].strip()[1:].partition(":")
            options[key] = value.strip()
            i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
            body.append(lines[i][3:])
            i += 1
        if kind == "literalinclude":
            source = (path.parent / arg).resolve()
            if source != TUTORIAL / "mysite" / "settings.py":
                continue
            text = source.read_text()
            if "start-after" in options:
                text = text.split(options["start-after"], 1)[1].split("\n", 1)[1]
            if "end-before" in options:
                text = text.split(options["end-before"], 1)[0]
            steps.append(("settings", textwrap.dedent(text)))
        while body and not body[0].strip():
            body.pop(0)
        if kind == "literalinclude":
            pass
        elif arg == "python" and body and body[0].startswith("# mysite/"):
            steps.append(("file", "\n".join(body).strip() + "\n"))
        elif arg == "sh":
            for line in body:
                command = line.split("#", 1)[0].strip()
                if command.startswith("python manage.py "):
                    steps.append(("sh", command))
    return steps


def test_installation_page_has_the_steps_the_walk_expects():
    kinds = [kind for kind, _ in page_steps(INSTALLATION_RST)]
    commands = [text for kind, text in page_steps(INSTALLATION_RST) if kind == "sh"]
    assert kinds.count("settings") == 3
    assert kinds.count("file") == 2  # asgi.py, urls.py
    assert commands == ["python manage.py migrate", "python manage.py check"]
    # migrate comes after the channel layer is named (stomp_cluster.E006 stops it before).
    assert kinds.index("sh") > 1


def code_lines(text: str) -> list[str]:
    """*text*'s lines without blank ones, comments after code, or a leading docstring."""
    text = re.sub(r'^""".*?"""\n', "", text, flags=re.S)
    lines = [line.split("  #", 1)[0].rstrip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("# mysite/")]


def test_tutorial_project_has_the_installation_pages_asgi_py():
    [page] = [
        text
        for kind, text in page_steps(INSTALLATION_RST)
        if kind == "file" and text.startswith("# mysite/asgi.py")
    ]
    project = (TUTORIAL / "mysite" / "asgi.py").read_text()
    assert code_lines(project) == code_lines(page), (
        "docs/tutorial_project/mysite/asgi.py differs from the asgi.py of "
        "docs/intro/installation.rst: make them the same"
    )


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_installation_page_followed_literally_gives_a_working_node(tmp_path):
    redis = RedisServer()
    redis.start()
    env = subprocess_env(REDIS_URL=redis.url)
    daphne = None
    try:
        run([sys.executable, "-m", "django", "startproject", "mysite"], tmp_path, env)
        project = tmp_path / "mysite"
        settings_py = project / "mysite" / "settings.py"
        for kind, text in page_steps(INSTALLATION_RST):
            if kind == "settings":
                settings_py.write_text(settings_py.read_text() + "\n" + text)
            elif kind == "file":
                first, _, rest = text.partition("\n")
                (project / first.removeprefix("# ")).write_text(rest)
            else:
                run([sys.executable, *text.split()[1:]], project, env)

        port = free_port()
        with open(tmp_path / "daphne.log", "wb") as log:
            daphne = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
                + ["mysite.asgi:application"],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, proc=daphne, timeout=60)
        topic = f"/topic/{unique('install')}"
        with RawStompClient(f"ws://127.0.0.1:{port}/ws") as client:
            client.connect()
            client.send_frame("SUBSCRIBE", {"id": "0", "destination": topic, "receipt": "r"})
            assert client.recv_frame().command == "RECEIPT"
            client.send_frame("SEND", {"destination": topic}, "from the client")
            assert client.recv_frame().body == b"from the client"
            # Another process on the same settings reaches the node through Redis.
            code = (
                "from stomp_cluster import send_to_destination; "
                f"print(send_to_destination({topic!r}, 'from the shell').sessions)"
            )
            out = run([sys.executable, "manage.py", "shell", "-c", code], project, env)
            assert out.split()[-1] == "1"  # after what the shell says it imported
            assert client.recv_frame().body == b"from the shell"
            # The health endpoint the page mounts answers for this node.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stomp/health/") as answer:
                assert answer.status == 200
                assert json.loads(answer.read())["status"] == "ok"
    finally:
        if daphne is not None:
            daphne.send_signal(signal.SIGTERM)
            try:
                daphne.wait(20)
            except subprocess.TimeoutExpired:
                daphne.kill()
                daphne.wait(10)
        redis.close()


# -- the tutorial, run as its step 6 runs it -------------------------------------------


class Browser:
    """A browser's HTTP side, stdlib only: cookies, Django's login page, CSRF on POST."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(str(c.value) for c in self.jar if c.name == name)

    def get(self, path: str) -> str:
        with self.opener.open(self.base_url + path, timeout=20) as response:
            return response.read().decode()

    def post(self, path: str, data: dict[str, str]) -> str:
        if "csrfmiddlewaretoken" not in data:
            data = {**data, "csrfmiddlewaretoken": self.cookie("csrftoken")}
        request = urllib.request.Request(
            self.base_url + path,
            data=urllib.parse.urlencode(data).encode(),
            headers={"Referer": self.base_url + path},
        )
        with self.opener.open(request, timeout=20) as response:
            return response.read().decode()

    def login(self, username: str, password: str) -> None:
        # The login page that step 0 adds: a fresh project has none.
        page = self.get("/chat/")  # redirected to /accounts/login/?next=/chat/
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page
        self.post(
            "/accounts/login/?next=/chat/",
            {"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
        )
        assert "/topic/chat.lobby" in self.get("/chat/")  # the room page, logged in


def recv_message(client: RawStompClient) -> dict[str, Any]:
    frame = client.recv_frame()
    assert frame.command == "MESSAGE", frame
    return dict(json.loads(frame.body), destination=frame.headers["destination"])


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tutorial_on_two_nodes(tmp_path, monkeypatch):
    redis = RedisServer()
    redis.start()
    env = subprocess_env(REDIS_URL=redis.url, DATABASE_PATH=str(tmp_path / "db.sqlite3"))
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        run([sys.executable, "manage.py", "migrate"], TUTORIAL, env)
        create = (
            "from django.contrib.auth import get_user_model; "
            "[get_user_model().objects.create_user(n, password='pw') for n in ('alice', 'bob')]"
        )
        run([sys.executable, "manage.py", "shell", "-c", create], TUTORIAL, env)
        ports = [free_port(), free_port()]
        for port in ports:
            with open(tmp_path / f"daphne-{port}.log", "wb") as log:
                nodes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
                        + ["mysite.asgi:application"],
                        cwd=TUTORIAL,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        for port, node in zip(ports, nodes, strict=True):
            wait_for_port(port, proc=node, timeout=60)

        # 1. alice on node 8000, bob on node 8001, each logged in by the login page.
        alice, bob = (Browser(f"http://127.0.0.1:{port}") for port in ports)
        alice.login("alice", "pw")
        bob.login("bob", "pw")
        sockets = []
        for browser, port in ((alice, ports[0]), (bob, ports[1])):
            cookie = f"sessionid={browser.cookie('sessionid')}"
            with monkeypatch.context() as patch:  # the page's WebSocket carries the cookie
                patch.setattr(
                    websocket,
                    "create_connection",
                    functools.partial(websocket.create_connection, cookie=cookie),
                )
                client = RawStompClient(f"ws://127.0.0.1:{port}/ws")
            client.connect()
            for sub, destination in enumerate(("/topic/chat.lobby", "/user/queue/notify")):
                client.send_frame(
                    "SUBSCRIBE", {"id": str(sub), "destination": destination, "receipt": "r"}
                )
                assert client.recv_frame().command == "RECEIPT"
            sockets.append(client)
        alice_ws, bob_ws = sockets

        # 2. Chat from alice's page: the handler runs on node 8000, both pages show it.
        alice_ws.send_frame("SEND", {"destination": "/app/chat/lobby"}, "hello bob")
        for client in sockets:
            assert recv_message(client) == {
                "user": "alice",
                "text": "hello bob",
                "destination": "/topic/chat.lobby",
            }

        # 3. Notify bob from alice's page: the view runs on node 8000, bob is on 8001.
        answer = json.loads(alice.post("/chat/notify/", {"to": "bob", "text": "psst"}))
        assert answer == {"sessions": 1, "nodes": 1}
        assert recv_message(bob_ws) == {
            "from": "alice",
            "text": "psst",
            "destination": "/user/queue/notify",
        }
        for client in sockets:
            client.close()
    finally:
        for node in nodes:
            node.send_signal(signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(10)
        redis.close()


# -- the checks' hints -----------------------------------------------------------------


def literal_hints() -> dict[str, str]:
    """The hints the checks give word for word: ``{check id: hint}``.

    Read from the source: ``hint=`` of each check in ``checks.py``, and the hint of each
    ``BackendCheck`` in ``conf.py``. Hints built at run time (f-strings) are left out.
    """
    import ast

    hints: dict[str, str] = {}
    package = REPO_ROOT / "stomp_cluster"
    for node in ast.walk(ast.parse((package / "checks.py").read_text())):
        if isinstance(node, ast.Call):
            kwargs = {k.arg: k.value for k in node.keywords}
            hint, check_id = kwargs.get("hint"), kwargs.get("id")
            if isinstance(hint, ast.Constant) and isinstance(check_id, ast.Constant):
                hints[check_id.value] = hint.value
    for node in ast.walk(ast.parse((package / "conf.py").read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "BackendCheck"
            and all(isinstance(a, ast.Constant) for a in node.args[:2])
        ):
            hints[node.args[0].value] = node.args[1].value
    return hints


def test_checks_page_gives_each_hint_as_the_check_does():
    page = " ".join((DOCS / "reference" / "checks.rst").read_text().replace("``", "").split())
    hints = literal_hints()
    assert {"stomp_cluster.E004", "stomp_cluster.E006"} <= hints.keys()
    for check_id, hint in hints.items():
        assert " ".join(hint.split()) in page, check_id
