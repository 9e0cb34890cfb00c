"""Pure pieces of the agent: the protocol's JSON, output budgeting, history repair, transcript replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.context import Context, budget
from agent.items import AssistantMessage, Summary, ToolCall, ToolResult, UserMessage
from agent.protocol import (
    ApprovalDecision,
    Interrupt,
    Shutdown,
    TerminalReason,
    ToolCallEnd,
    TurnCompleted,
    UserInput,
    parse_event,
    parse_op,
)
from agent.rollout import Rollout, RolloutError, SessionMeta, find_session, load


def test_ops_round_trip_through_json() -> None:
    for op in (UserInput(text="hi"), Interrupt(), ApprovalDecision(call_id="c1", decision="approved_for_session"),
               Shutdown(graceful=True)):
        assert parse_op(op.model_dump_json()) == op


def test_events_round_trip_and_reject_unknown_types() -> None:
    event = TurnCompleted(turn=2, reason=TerminalReason.MAX_TURNS, iterations=3, error="stopped")
    assert parse_event(event.model_dump_json()) == event
    assert json.loads(ToolCallEnd(call_id="c", name="shell", output="x").model_dump_json())["type"] == "tool_call_end"
    with pytest.raises(ValueError):
        parse_op('{"type": "format_disk"}')
    with pytest.raises(ValueError):
        parse_op('{"type": "approval_decision", "call_id": "c", "decision": "maybe"}')


def test_budget_keeps_head_and_tail_and_says_what_was_cut() -> None:
    text = "".join(f"line {i}\n" for i in range(10_000))
    out = budget(text, 2000)
    assert out.startswith("line 0\n") and out.endswith("line 9999\n")
    assert len(out.encode()) < 2300
    assert "bytes" in out and "lines cut from the middle" in out
    assert budget("short", 2000) == "short"


def test_budget_never_splits_a_utf8_character() -> None:
    out = budget("é" * 5000, 1001)
    out.encode("utf-8")  # no surrogate or replacement garbage
    assert "\ufffd" not in out


def test_close_open_calls_answers_every_unanswered_call_in_order() -> None:
    calls = [ToolCall(id="a", name="shell"), ToolCall(id="b", name="read_file"), ToolCall(id="c", name="shell")]
    ctx = Context([UserMessage(text="go"), AssistantMessage(tool_calls=calls),
                   ToolResult(call_id="a", name="shell", output="done")])
    added = ctx.close_open_calls("interrupted")
    assert [r.call_id for r in added] == ["b", "c"] and all(r.is_error for r in added)
    assert ctx.open_calls() == []


def test_compaction_keeps_recent_user_messages_and_the_summary() -> None:
    ctx = Context([UserMessage(text="first"), AssistantMessage(text="a"), UserMessage(text="second")])
    before, after = ctx.apply_compaction("SUMMARY")
    assert (before, after) == (3, 3)
    assert ctx.items == [UserMessage(text="first"), UserMessage(text="second"), Summary(text="SUMMARY")]


def test_compaction_source_never_starts_with_an_orphan_result() -> None:
    ctx = Context([UserMessage(text="u"), AssistantMessage(tool_calls=[ToolCall(id="a", name="x")]),
                   ToolResult(call_id="a", name="x", output="o"), AssistantMessage(text="t")])
    src = ctx.compaction_source(drop_oldest=2)
    assert isinstance(src[0], AssistantMessage) and isinstance(src[-1], UserMessage)


def _rollout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rollout:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return Rollout.create(SessionMeta(session_id="abcdef0123456789", cwd="/w", provider="p", model="m",
                                      policy="workspace-write", approval="never"))


def test_transcript_replays_items_and_compactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _rollout(tmp_path, monkeypatch)
    r.turn_context(turn=1)
    r.item(UserMessage(text="one"))
    r.item(AssistantMessage(text="two"))
    r.compacted([Summary(text="S")])
    r.item(UserMessage(text="three"))
    r.close()
    loaded = load(find_session("abcdef"))
    assert loaded.items == [Summary(text="S"), UserMessage(text="three")]
    assert loaded.turns == 1 and loaded.meta.model == "m"


def test_transcript_with_a_torn_last_line_loads_with_a_warning(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    r = _rollout(tmp_path, monkeypatch)
    r.item(UserMessage(text="kept"))
    r.close()
    with open(r.path, "a") as fh:
        fh.write('{"timestamp": "x", "type": "item", "payload": {"type": "us')  # killed mid-write
    loaded = load(r.path)
    assert loaded.items == [UserMessage(text="kept")] and loaded.warnings


def test_transcript_corrupt_in_the_middle_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _rollout(tmp_path, monkeypatch)
    r.close()
    with open(r.path, "a") as fh:
        fh.write("not json\n")
        fh.write(json.dumps({"timestamp": "x", "type": "item", "payload": {"type": "user", "text": "x"}}) + "\n")
    with pytest.raises(RolloutError, match=":2:"):
        load(r.path)


def test_find_session_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with pytest.raises(RolloutError, match="no saved sessions"):
        find_session("x")
