"""Token grants: the token's form, roles, workspace scope, expiry and revocation (pure logic)."""

from __future__ import annotations

import dataclasses

import pytest

from runstream.auth.grants import (
    EVERY_WORKSPACE,
    ForbiddenError,
    Grant,
    GrantError,
    Role,
    authenticate,
    check_workspace,
    digest,
    new_grant,
    token_id_of,
)
from runstream.errors import AuthError

NOW = 1_800_000_000_000


def test_a_token_names_its_grant_and_only_its_digest_is_kept() -> None:
    grant, token = new_grant("vision", Role.INGEST, name="jobs", now_ms=NOW)
    assert token.startswith("rs_") and token_id_of(token) == grant.token_id
    assert grant.digest == digest(token) and token not in grant.encode().decode()
    assert Grant.decode(grant.encode()) == grant
    assert "digest" not in grant.public() and grant.public()["role"] == "ingest"
    other, other_token = new_grant("vision", Role.INGEST, now_ms=NOW)
    assert other.token_id != grant.token_id and other_token != token
    assert token_id_of("rs_not-a-scoped-token") is None and token_id_of(token + "x") is None


def test_roles_include_the_ones_below_and_scope_is_exact() -> None:
    grant, token = new_grant("vision", Role.INGEST, now_ms=NOW)
    principal = authenticate(grant, token, NOW)
    assert principal.may(Role.READ) and principal.may(Role.INGEST) and not principal.may(Role.ADMIN)
    with pytest.raises(ForbiddenError, match="role is ingest; this needs admin"):
        principal.require(Role.ADMIN)
    assert principal.may_access("vision")
    for other in ("Vision", "vision ", "visio", "vision2", "*", "", "default"):
        assert not principal.may_access(other), other
        with pytest.raises(ForbiddenError, match="scoped to workspace 'vision'"):
            principal.require_workspace(other)
    every, every_token = new_grant(EVERY_WORKSPACE, Role.READ, now_ms=NOW)
    assert authenticate(every, every_token, NOW).may_access("anything")


def test_a_wrong_expired_or_revoked_token_is_refused_with_its_reason() -> None:
    grant, token = new_grant("vision", Role.READ, now_ms=NOW, ttl_seconds=60)
    assert authenticate(grant, token, NOW + 59_999).workspace == "vision"
    with pytest.raises(AuthError, match="expired"):
        authenticate(grant, token, NOW + 60_000)
    with pytest.raises(AuthError, match="revoked"):
        authenticate(dataclasses.replace(grant, revoked_ms=NOW), token, NOW)
    with pytest.raises(AuthError, match="invalid bearer token"):
        authenticate(grant, token[:-1] + ("A" if token[-1] != "A" else "B"), NOW)
    with pytest.raises(AuthError, match="invalid bearer token"):
        authenticate(None, token, NOW)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: new_grant("no spaces", Role.READ, now_ms=NOW), "workspace"),
        (lambda: new_grant("vision", Role.READ, now_ms=NOW, ttl_seconds=0), "expires_in"),
        (lambda: new_grant("vision", Role.READ, now_ms=NOW, name="x" * 201), "name"),
        (lambda: Role.parse("owner"), "role"),
        (lambda: check_workspace("a" * 65), "workspace"),
    ],
)
def test_bad_requests_name_the_field(call: object, field: str) -> None:
    with pytest.raises(GrantError) as refused:
        call()  # type: ignore[operator]
    assert refused.value.field == field
