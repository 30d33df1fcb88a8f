"""The demo and the admin in headless Chromium, on a real two-node cluster.

alice's browser is on node A and bob's on node B (separate browser contexts, so separate
cookies). They chat through ``/app/chat`` to ``/topic/chat``, and a refused message shows
on alice's page alone while the chat goes on; alice notifies bob through a Django view running
on node A and the message reaches bob's socket on node B. The admin's "Live connections"
page lists both sessions on their nodes, drops alice without a reload when she leaves, and
its Disconnect action (driven by keyboard) closes bob's socket with an ERROR frame whose
message is the reason typed in, then shows him gone and writes the admin log.

Screenshots: ``admin-connections.png`` and ``demo.png`` (see ``conftest.py`` for where).
"""

from __future__ import annotations

import sqlite3
import time
from urllib.parse import quote

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.timeout(150)]

PASSWORD = "stomp-demo"
ADMIN_PASSWORD = "stomp-admin"
CONNECTIONS = "admin/stomp_cluster/connection/"


def origin(node) -> str:
    return node.http_url.rstrip("/")


def log_in(context, node, username, password, next_path):
    """Open the login page of *node* in a new tab and log in; return the page at next."""
    page = context.new_page()
    login = "admin/login/" if next_path.startswith("/admin/") else "login/"
    page.goto(f"{node.http_url}{login}?next={quote(next_path)}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.locator("#id_password").press("Enter")
    page.wait_for_url(f"{origin(node)}{next_path}")
    return page


def open_demo(context, node, peer, username, sockets=None):
    """Log *username* in on *node* and wait until the demo page's STOMP session is up."""
    page = context.new_page()
    if sockets is not None:
        page.on("websocket", lambda socket: sockets.append(socket))
    path = f"/?peer={quote(origin(peer), safe='')}"
    page.goto(f"{node.http_url}login/?next={quote(path)}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.locator("#id_password").press("Enter")
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_contain_text("connected, session")
    return page


def test_chat_notify_and_admin_across_two_nodes(cluster, new_context, screenshot_dir, db_path):
    from playwright.sync_api import expect

    started = time.monotonic()
    node_a, node_b = cluster(2)

    # -- alice on A, bob on B: which node, chat, online users ---------------------------
    alice = open_demo(new_context(), node_a, node_b, "alice")
    bob_sockets: list = []
    bob = open_demo(new_context(), node_b, node_a, "bob", bob_sockets)
    expect(alice.locator("#node")).to_have_text(node_a.node_id)
    expect(bob.locator("#node")).to_have_text(node_b.node_id)
    alice_session = alice.evaluate("document.body.dataset.session")
    bob_session = bob.evaluate("document.body.dataset.session")

    alice.fill("#chat-text", "hello bob, alice on A here")
    alice.locator("#chat-text").press("Enter")
    expect(bob.locator("#chat")).to_contain_text("alice: hello bob, alice on A here")
    bob.fill("#chat-text", "hi alice, bob on B")
    bob.get_by_role("button", name="Send", exact=True).click()
    expect(alice.locator("#chat")).to_contain_text("bob: hi alice, bob on B")
    # A refused message (HandlerError) shows on the sender's page; the chat goes on.
    expect(alice.locator("body")).to_have_attribute("data-whoami", "alice")
    alice.get_by_role("button", name="Send a refused message").click()
    expect(alice.locator("#chat li.refused")).to_have_text("not sent: nope")
    alice.fill("#chat-text", "still here")
    alice.locator("#chat-text").press("Enter")
    expect(bob.locator("#chat")).to_contain_text("alice: still here")
    expect(bob.locator("#chat li.refused")).to_have_count(0)

    online = alice.locator("#online")
    expect(online.locator('li[data-username="bob"]')).to_contain_text(f"node {node_b.node_id}")
    expect(online.locator('li[data-username="alice"]')).to_contain_text(node_a.node_id)

    # -- a notification posted to a Django view on A reaches bob on B ------------------
    form = alice.frame_locator(f'iframe[data-origin="{origin(node_a)}"]')
    expect(form.locator("strong")).to_have_text(f"via {node_a.node_id}")
    form.locator("#to").fill("bob")
    form.locator("#text").fill("your build is green")
    form.get_by_role("button", name="Notify").click()
    expect(form.locator("#result")).to_contain_text(
        f"Node {node_a.node_id} sent it to bob: 1 session(s) on 1 node(s)."
    )
    expect(bob.locator("#private")).to_contain_text(
        f"from alice (sent by node {node_a.node_id}): your build is green"
    )
    bob.wait_for_timeout(300)  # let the online list settle for the picture
    bob.screenshot(path=str(screenshot_dir / "demo.png"))

    # -- the admin lists both sessions with their nodes -------------------------------
    admin = log_in(new_context(1440, 900), node_a, "admin", ADMIN_PASSWORD, f"/{CONNECTIONS}")
    admin.locator("#toggle-nav-sidebar").click()  # room for every column
    alice_row = admin.locator(f'tr[data-key="{alice_session}"]')
    bob_row = admin.locator(f'tr[data-key="{bob_session}"]')
    expect(alice_row.locator(".field-user")).to_contain_text("alice")
    expect(alice_row.locator(".field-node")).to_have_text(node_a.node_id)
    expect(bob_row.locator(".field-user")).to_contain_text("bob")
    expect(bob_row.locator(".field-node")).to_have_text(node_b.node_id)
    expect(bob_row.locator(".field-version")).to_have_text("1.2")
    expect(bob_row.locator("summary")).to_have_text("4 subscriptions")
    expect(admin.locator("#result_list tbody tr")).to_have_count(2)
    admin.screenshot(path=str(screenshot_dir / "admin-connections.png"))

    # -- alice leaves: the page drops her row without a reload --------------------------
    admin.evaluate("window.stillTheSamePage = true")
    bob_row.locator("summary").click()  # an opened list must survive the live updates
    alice.context.close()
    expect(alice_row).to_have_count(0, timeout=15_000)
    assert admin.evaluate("window.stillTheSamePage") is True
    expect(bob_row.locator("details")).to_have_attribute("open", "")
    expect(bob_row.locator(".stomp-subs")).to_contain_text("/user/queue/notify")

    # -- Disconnect bob, by keyboard: his socket closes and the page shows him gone ----
    bob_row.get_by_role("button", name=f"Disconnect bob (session {bob_session})").focus()
    admin.keyboard.press("Enter")
    expect(admin.locator("h1")).to_have_text("Disconnect live connections")
    reason = admin.get_by_label("Reason, sent to the client:")
    reason.focus()
    reason.fill("removed by the browser test")
    admin.keyboard.press("Enter")
    admin.wait_for_url(f"{origin(node_a)}/{CONNECTIONS}")
    expect(admin.locator(".messagelist")).to_contain_text(
        f"Disconnected 1 session: bob on {node_b.node_id}."
    )
    expect(bob.locator("#status")).to_have_text("closed by the server: removed by the browser test")
    expect(bob.locator("#reconnect")).to_be_visible()
    assert bob_sockets and all(socket.is_closed() for socket in bob_sockets)

    # -- bob reconnects: x-rewind gives him the chat's last lines before live ones ----------
    bob.locator("#reconnect").click()
    expect(bob.locator("#status")).to_contain_text("connected, session")
    expect(bob.locator("#chat li.earlier")).to_have_text(
        ["alice: hello bob, alice on A here", "bob: hi alice, bob on B", "alice: still here"]
    )
    expect(bob.locator("#chat li.refused")).to_have_count(0)
    bob.close()
    expect(admin.locator(f'tr[data-key="{bob_session}"]')).to_have_count(0, timeout=15_000)
    expect(admin.locator("[data-live-empty]")).to_be_visible()

    with sqlite3.connect(db_path) as db:
        logged = db.execute(
            "SELECT object_id, action_flag, change_message FROM django_admin_log"
            " WHERE object_id = ?",
            (bob_session,),
        ).fetchall()
    assert logged == [
        (
            bob_session,
            3,
            f"Disconnected bob on node {node_b.node_id} (127.0.0.1): removed by the browser test",
        )
    ]
    print(f"browser scenario took {time.monotonic() - started:.1f} s")
