"""Parsing client messages of the live protocol: every mistake is named, nothing is guessed."""

from __future__ import annotations

import pytest

from runstream.gateway.protocol import (
    ErrorCode,
    Kind,
    LiveRequestError,
    Ping,
    Pong,
    Subscribe,
    Unsubscribe,
    cursor_json,
    parse_request,
)


def test_a_run_subscription_with_every_option() -> None:
    request = parse_request(
        '{"op": "subscribe", "sub": "s1", "run_id": "r-1", "workspace": "team", "cursor": 41,'
        ' "max_rate": 30, "types": ["logs.appended", "run.*"]}'
    )
    assert request == Subscribe("s1", Kind.RUN, "r-1", "team", 41, True, 30.0, ("logs.appended", "run.*"))
    assert isinstance(request, Subscribe)
    assert request.wants("run.completed") and request.wants("logs.appended")
    assert not request.wants("metrics.logged")


def test_defaults_and_the_other_kinds() -> None:
    assert parse_request('{"op": "subscribe", "sub": "a", "run_id": "r"}') == Subscribe(
        "a", Kind.RUN, "r", "default", None, True, None
    )
    experiment = parse_request(
        '{"op": "subscribe", "sub": "e", "experiment": "mnist v2/a", "cursor": {"0": 4, "2": -1}}'
    )
    assert isinstance(experiment, Subscribe) and experiment.kind is Kind.EXPERIMENT
    assert experiment.cursor == {0: 4, 2: -1}
    assert cursor_json(experiment.cursor) == {"0": 4, "2": -1}
    compute = parse_request('{"op": "subscribe", "sub": "c", "compute": "gpu", "snapshot": false}')
    assert isinstance(compute, Subscribe) and compute.kind is Kind.COMPUTE and not compute.snapshot
    assert parse_request('{"op": "unsubscribe", "sub": "a"}') == Unsubscribe("a")
    assert parse_request('{"op": "ping"}') == Ping()
    assert parse_request('{"op": "ping", "id": 7}') == Ping(7)
    assert parse_request('{"op": "pong"}') == Pong()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{oops", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"op": "dance"}', "op: unknown operation"),
        ('{"op": "subscribe", "run_id": "r"}', "sub:"),
        ('{"op": "subscribe", "sub": "a b", "run_id": "r"}', "sub:"),
        ('{"op": "subscribe", "sub": "a"}', "exactly one of"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "compute": "c"}', "exactly one of"),
        ('{"op": "subscribe", "sub": "a", "run_id": "bad id!"}', "run_id:"),
        ('{"op": "subscribe", "sub": "a", "experiment": ""}', "experiment:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "workspace": "-x"}', "workspace:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "cursor": "x"}', "cursor:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "cursor": -2}', "cursor:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "cursor": true}', "cursor:"),
        ('{"op": "subscribe", "sub": "a", "experiment": "e", "cursor": 3}', "cursor:"),
        ('{"op": "subscribe", "sub": "a", "experiment": "e", "cursor": {"x": 1}}', "cursor:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "max_rate": 0}', "max_rate:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "max_rate": 1e9}', "max_rate:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "snapshot": 1}', "snapshot:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "types": []}', "types:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "types": ["Logs"]}', "types:"),
        ('{"op": "subscribe", "sub": "a", "experiment": "e", "types": ["run.*"]}', "types:"),
        ('{"op": "subscribe", "sub": "a", "run_id": "r", "colour": 1}', "colour: not a field"),
        ('{"op": "unsubscribe"}', "sub:"),
        ('{"op": "ping", "id": [1]}', "id:"),
    ],
)
def test_malformed_messages_are_named(text: str, named: str) -> None:
    with pytest.raises(LiveRequestError) as error:
        parse_request(text)
    assert named in error.value.detail
    assert error.value.code is ErrorCode.BAD_REQUEST
