"""What the model sees: the history, its size, and the rules that keep it in the window.

Tool output is budgeted once, when it is recorded (head + tail with a marker
saying what was cut), so a resumed session replays exactly what the model
saw. Token counts are estimates (4 bytes a token) corrected by the usage the
provider reports; they drive the token budget and proactive compaction,
while a context-overflow error from the provider triggers one reactive
compaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.items import AssistantMessage, Item, Summary, ToolResult, UserMessage

BYTES_PER_TOKEN = 4
DEFAULT_TOOL_OUTPUT_BYTES = 16_000  # ~4k tokens: Codex cuts at 10k tokens, mini-swe-agent at 10k chars
RECENT_USER_TOKENS = 20_000  # user messages kept verbatim across a compaction

COMPACT_PROMPT = (
    "The conversation so far is about to be replaced by a summary so the work can continue in a fresh "
    "context window. Write a handoff summary for yourself: the user's goal, what has been done and "
    "verified, the current state of the files you changed, decisions made and why, open problems, and "
    "the exact next steps. Be concrete (paths, commands, error messages). Do not call tools."
)
CONTINUE_PROMPT = (
    "Your last response was cut off by the output-token limit. Continue exactly where you stopped; "
    "do not repeat what you already wrote."
)


def budget(text: str, limit: int = DEFAULT_TOOL_OUTPUT_BYTES) -> str:
    """Keep the head and tail of `text` within `limit` bytes, saying what was cut and how much."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    half = limit // 2
    head = raw[:half].decode("utf-8", "ignore")
    tail = raw[-half:].decode("utf-8", "ignore")
    cut = raw[half:len(raw) - half]
    lines = cut.count(b"\n")
    total_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    marker = (f"\n[... {len(cut)} bytes, {lines} lines cut from the middle of {len(raw)} bytes / "
              f"{total_lines} lines of output ...]\n")
    return head + marker + tail


def estimate_tokens(item: Item) -> int:
    if isinstance(item, UserMessage | Summary):
        size = len(item.text)
    elif isinstance(item, AssistantMessage):
        size = len(item.text) + sum(len(c.name) + len(c.arguments) + 16 for c in item.tool_calls)
    else:
        size = len(item.output) + 16
    return size // BYTES_PER_TOKEN + 4


class Context:
    """The linear history of one session."""

    def __init__(self, items: Iterable[Item] = (), window_tokens: int | None = None) -> None:
        self.items: list[Item] = list(items)
        self.window_tokens = window_tokens
        self.reported_input_tokens = 0  # what the provider said the last prompt cost

    def add(self, item: Item) -> None:
        self.items.append(item)

    def extend(self, items: Iterable[Item]) -> None:
        self.items.extend(items)

    def tokens(self) -> int:
        return sum(estimate_tokens(i) for i in self.items)

    def near_full(self) -> bool:
        """Within 5 % of the window (known window only): compact before the next call."""
        if not self.window_tokens:
            return False
        used = max(self.tokens(), self.reported_input_tokens)
        return used >= 0.95 * self.window_tokens

    def open_calls(self) -> list[tuple[str, str]]:
        """(call_id, name) of tool calls in the last assistant message with no result yet."""
        for index in range(len(self.items) - 1, -1, -1):
            item = self.items[index]
            if isinstance(item, AssistantMessage):
                answered = {r.call_id for r in self.items[index + 1:] if isinstance(r, ToolResult)}
                return [(c.id, c.name) for c in item.tool_calls if c.id not in answered]
        return []

    def close_open_calls(self, why: str) -> list[ToolResult]:
        """Give every unanswered tool call a synthetic result, so the transcript stays valid."""
        results = [ToolResult(call_id=cid, name=name, output=why, is_error=True) for cid, name in self.open_calls()]
        self.items.extend(results)
        return results

    def compaction_source(self, drop_oldest: int = 0) -> list[Item]:
        """The items to summarise (dropping the oldest ones when even the summary request overflows)."""
        items = self.items[drop_oldest:]
        while items and isinstance(items[0], ToolResult):  # never start with an orphan result
            items = items[1:]
        return [*items, UserMessage(text=COMPACT_PROMPT)]

    def apply_compaction(self, summary: str) -> tuple[int, int]:
        """Rebuild the history as recent user messages (within budget) + the summary."""
        before = len(self.items)
        kept: list[Item] = []
        spent = 0
        for item in reversed(self.items):
            if isinstance(item, UserMessage):
                cost = estimate_tokens(item)
                if spent + cost > RECENT_USER_TOKENS:
                    break
                kept.append(item)
                spent += cost
        kept.reverse()
        self.items = [*kept, Summary(text=summary)]
        self.reported_input_tokens = 0
        return before, len(self.items)
