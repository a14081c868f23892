"""The client's grader and hyperparameter flags: files, inline JSON and short forms."""

from __future__ import annotations

import pytest

from rapid_client.connection import ClientError, connect
from rapid_client.specs import parse_grader, parse_hyperparameters


def test_grader_short_forms_files_and_inline_json(tmp_path):
    assert parse_grader("numeric:{{item.answer}}") == {"type": "numeric", "reference": "{{item.answer}}"}
    assert parse_grader("exact:a:b") == {"type": "exact", "reference": "a:b"}
    assert parse_grader('{"type": "math", "reference": "{{item.x}}"}') == {
        "type": "math",
        "reference": "{{item.x}}",
    }
    (tmp_path / "g.yaml").write_text("type: string_check\noperation: eq\n")
    assert parse_grader(str(tmp_path / "g.yaml")) == {"type": "string_check", "operation": "eq"}
    (tmp_path / "grade.py").write_text("def grade(sample, item):\n    return 1.0\n")
    assert parse_grader(f"python:{tmp_path / 'grade.py'}")["source"].startswith("def grade")
    for bad, message in [
        ("{nope", "not valid JSON"),
        ("Numeric stuff", "TYPE:REFERENCE"),
        (str(tmp_path / "missing.json"), "cannot read"),
    ]:
        with pytest.raises(ClientError, match=message):
            parse_grader(bad)


def test_hyperparameters_from_a_file_then_flags(tmp_path):
    (tmp_path / "hp.json").write_text('{"rounds": 12, "is_level": "token"}')
    got = parse_hyperparameters(
        ["rounds=3", "learning_rate=3e-4", "is_clip=null", 'report_to=["tensorboard"]', "is_level=sequence"],
        str(tmp_path / "hp.json"),
    )
    assert got == {
        "rounds": 3,
        "learning_rate": 3e-4,
        "is_clip": None,
        "report_to": ["tensorboard"],
        "is_level": "sequence",
    }
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ClientError, match="must hold a mapping"):
        parse_hyperparameters([], str(tmp_path / "list.yaml"))


def test_connection_from_the_environment(monkeypatch):
    for name in ("RAPID_API_KEY", "RAPID_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ClientError, match="no API key"):
        connect()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere:1/v1")
    assert str(connect().base_url) == "http://elsewhere:1/v1/"
    monkeypatch.setenv("RAPID_API_KEY", "rk-rapid")
    monkeypatch.setenv("RAPID_BASE_URL", "http://127.0.0.1:8000")
    client = connect()
    assert client.api_key == "rk-rapid" and str(client.base_url) == "http://127.0.0.1:8000/v1/"
    assert connect("http://h:9/v1/", "rk-flag").api_key == "rk-flag"
