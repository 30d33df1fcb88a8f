"""HTTP clients for the test project's views on a real node (stdlib only): a logged-in
session, and :func:`post_with_key` for the publish API."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["DjangoSession", "post_with_key"]


class DjangoSession:
    """Logs in through ``/login/`` and posts with the CSRF token, like a browser."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _csrf(self) -> str:
        for cookie in self.jar:
            if cookie.name == "csrftoken":
                return str(cookie.value)
        raise AssertionError("no csrftoken cookie")

    def login(self, username: str, password: str = "stomp-demo") -> DjangoSession:
        page = self.opener.open(f"{self.base_url}/login/", timeout=20).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, "login page has no CSRF token"
        data = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
        ).encode()
        request = urllib.request.Request(
            f"{self.base_url}/login/", data=data, headers={"Referer": f"{self.base_url}/login/"}
        )
        self.opener.open(request, timeout=20)
        assert any(c.name == "sessionid" for c in self.jar), f"login as {username} failed"
        return self

    def post_json(self, path: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(payload).encode(),
            headers={
                "Content-Type": "application/json",
                "X-CSRFToken": self._csrf(),
                "Referer": f"{self.base_url}/",
            },
        )
        return json.loads(self.opener.open(request, timeout=20).read())


def post_with_key(
    url: str, payload: Any, key: str | None, *, method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    """Send *payload* as JSON with ``Authorization: Bearer <key>`` (none when *key* is None).

    Returns:
        The status, the response headers (lower-cased names) and the decoded JSON body,
        for error statuses too.
    """
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if method == "GET" else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, answer, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer, body = error.code, error.headers, error.read()
    return status, {k.lower(): v for k, v in answer.items()}, json.loads(body)
