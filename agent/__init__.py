"""The compact agent loop: every tool call goes through the sandbox.

    protocol.py      Ops in, Events out: the only language of front ends
    loop.py          stream the model -> run tool calls -> feed results back -> repeat
    orchestrator.py  the one route of every tool call: safety -> approval -> sandbox -> denials
    models/          streaming clients (Chat Completions, Responses, Anthropic) with retries
    tools/           shell, apply_patch, read_file, list_dir, search, update_plan
    context.py       history, output budgets, compaction
    rollout.py       JSONL transcripts, written before every model call; resume and fork
    runner.py        wiring: model + confined session + orchestrator + transcript
    cli.py           the `stockade` entry point; commands.py: exec, chat, resume

It reaches the sandbox only through `sandbox.Session` and `sandbox.run`; it
never builds a bwrap argv itself. Importing `agent` imports nothing else.
"""
