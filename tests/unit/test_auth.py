"""API keys: which routes are open, the header, the keys file (rotation, Secret updates), the comparison."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os

import pytest

from predictor import errors
from predictor.edge import auth, web
from predictor.edge.auth import ApiKeys


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/gptj/ready"),
        ("GET", "/v2/models/gptj/versions/1/ready"),
        ("GET", "/v1/models/gptj"),
        ("HEAD", "/v2/health/live"),
    ],
)
def test_probes_and_metrics_are_open(method, path):
    assert auth.is_open(method, path)


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/models/gptj:predict"),
        ("POST", "/v1/models/gptj:stream"),
        ("GET", "/v1/models"),
        ("POST", "/v1/models/gptj"),
        ("GET", "/v1/models/gptj:predict"),
        ("POST", "/v2/models/gptj/infer"),
        ("GET", "/v2/models/gptj"),
        ("GET", "/v2/models"),
        ("GET", "/v2"),
        ("POST", "/v2/repository/models/gptj/load"),
        ("GET", "/openai/v1/models"),
        ("GET", "/openai/v1/models/gptj"),
        ("POST", "/openai/v1/completions"),
        ("POST", "/v2/health/live"),
        ("GET", "/docs"),
        ("GET", "/no/such/route"),
        ("GET", "/metrics/../v2"),
    ],
)
def test_everything_else_needs_a_key(method, path):
    assert not auth.is_open(method, path)


@pytest.mark.parametrize(
    "header, message, invalid",
    [
        (None, "missing API key: send the header 'Authorization: Bearer <key>'", False),
        ("", "missing API key: send the header 'Authorization: Bearer <key>'", False),
        ("Basic dXNlcjpwYXNz", "the Authorization header must be 'Bearer <key>'", False),
        ("Bearer ", "the Authorization header must be 'Bearer <key>'", False),
        ("wrong-key", "the Authorization header must be 'Bearer <key>'", False),
        ("Bearer wrong-key", "invalid API key", True),
    ],
)
def test_refusals_say_what_is_wrong_and_challenge_for_a_bearer_token(keys_file, header, message, invalid):
    with pytest.raises(errors.Unauthorized) as caught:
        ApiKeys(keys_file).load().slot(header)
    assert caught.value.status == 401 and caught.value.message == message
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"' if invalid else "Bearer"}


def test_each_key_has_its_slot_and_the_scheme_is_case_insensitive(keys_file):
    keys = ApiKeys(keys_file).load()
    assert keys.slot("Bearer key-one") == 0
    assert keys.slot("bearer   key-two  ") == 1  # comments and blank lines take no slot


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("key-one\n\n# the second key, for rotation\n  key-two  \n")
    return path


def test_the_comparison_looks_at_every_key_whatever_matches(monkeypatch):
    """No early exit: every accepted key is compared, in constant time, as a fixed-length digest,
    whether the presented key matches none, the first, the last, or shares a long prefix with one."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    secret = "s3cr3t-" + "x" * 40
    accepted = tuple(auth.digest(k) for k in (secret, "other-key", "third-key"))
    for presented, expected in [
        (secret, 0),
        ("third-key", 2),
        (secret[:-1], None),
        (secret + "y", None),
        ("", None),
        ("z" * 1000, None),
    ]:
        calls.clear()
        assert auth.match(auth.digest(presented), accepted) == expected
        assert calls == [(32, 32)] * 3  # all three, each on SHA-256 digests: length reveals nothing


def test_the_file_is_read_again_when_it_changes(keys_file):
    keys = ApiKeys(keys_file).load()
    keys_file.write_text("key-three\nkey-one\n")
    os.utime(keys_file, ns=(1, 1))  # a different mtime even within the filesystem's clock tick
    assert keys.slot("Bearer key-three") == 0 and keys.slot("Bearer key-one") == 1
    with pytest.raises(errors.Unauthorized):
        keys.slot("Bearer key-two")


def test_a_secret_volume_update_is_seen(tmp_path):
    """Kubernetes updates a Secret volume by pointing the ..data symlink at a new directory."""

    def version(name: str, content: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "keys").write_text(content)
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    version("..2026_01", "old-key\n")
    (tmp_path / "keys").symlink_to("..data/keys")
    keys = ApiKeys(tmp_path / "keys").load()
    assert keys.slot("Bearer old-key") == 0
    version("..2026_02", "new-key\nold-key\n")  # same mtime second, same size or not: a new inode
    assert keys.slot("Bearer new-key") == 0 and keys.slot("Bearer old-key") == 1
    version("..2026_03", "new-key\n")
    with pytest.raises(errors.Unauthorized):
        keys.slot("Bearer old-key")


def test_a_file_that_cannot_be_read_later_keeps_the_keys_in_use(keys_file, caplog):
    keys = ApiKeys(keys_file).load()
    keys_file.unlink()
    with caplog.at_level(logging.WARNING, logger="predictor"):
        assert keys.slot("Bearer key-two") == 1
        assert keys.slot("Bearer key-one") == 0
    warnings = [r.getMessage() for r in caplog.records if "cannot re-read" in r.getMessage()]
    assert len(warnings) == 1  # once, not on every request


def test_an_emptied_file_refuses_everyone(keys_file):
    keys = ApiKeys(keys_file).load()
    keys_file.write_text("# all keys revoked\n")
    with pytest.raises(errors.Unauthorized):
        keys.slot("Bearer key-one")


@pytest.mark.parametrize("content, message", [(None, "No such file or directory"), ("\n# none\n", "no keys in it")])
def test_a_missing_or_empty_file_stops_the_start(tmp_path, content, message):
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        ApiKeys(path).load()


def test_keys_never_reach_the_log(keys_file, caplog):
    with caplog.at_level(logging.DEBUG):
        keys = ApiKeys(keys_file).load()
        keys_file.write_text("key-four\n")
        os.utime(keys_file, ns=(2, 2))
        for header in ("Bearer key-four", "Bearer key-one"):
            with contextlib.suppress(errors.Unauthorized):
                keys.slot(header)
    assert caplog.records and not any("key-" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/models/gptj:predict", {"status": "failed", "data": None, "message": "invalid API key"}),
        ("/v2/models/gptj/infer", {"error": "invalid API key"}),
        (
            "/openai/v1/completions",
            {
                "error": {
                    "message": "invalid API key",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        ),
    ],
)
def test_each_protocol_gets_its_own_401_body(path, body):
    failure = errors.classify(errors.Unauthorized("invalid API key", invalid=True))
    assert failure.status == 401 and web.error_body(failure, path) == body
