"""Connection tokens: accepted while valid, refused otherwise."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from stomp_cluster.tokens import connection_token, verify_connection_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return get_user_model().objects.create_user("tokyo", password="pw")


def test_valid_token_gives_the_user(user):
    assert verify_connection_token("tokyo", connection_token(user)) == user


def test_token_for_another_login_is_refused(user):
    assert verify_connection_token("osaka", connection_token(user)) is None


def test_expired_token_is_refused(user):
    assert verify_connection_token("tokyo", connection_token(user, max_age=-1)) is None


def test_tampered_token_is_refused(user):
    token = connection_token(user)
    assert verify_connection_token("tokyo", token[:-2] + "xx") is None
    assert verify_connection_token("tokyo", "not a token") is None


def test_password_change_revokes_tokens(user):
    token = connection_token(user)
    user.set_password("new")
    user.save()
    assert verify_connection_token("tokyo", token) is None


def test_inactive_user_is_refused(user):
    token = connection_token(user)
    user.is_active = False
    user.save()
    assert verify_connection_token("tokyo", token) is None


def test_stomp_token_command_prints_a_working_token(user, capsys):
    call_command("stomp_token", "tokyo")
    token = capsys.readouterr().out.strip()
    assert verify_connection_token("tokyo", token) == user
