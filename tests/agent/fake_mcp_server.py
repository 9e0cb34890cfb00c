"""A small MCP server (stdio, newline-delimited JSON-RPC) for tests; stdlib only, run inside the sandbox.

Tools: echo(text), write(path, text) (tries to write a file: shows what the sandbox lets the server do),
read(path), slow(seconds), crash(). `--silent` never answers (a hung server); `--noisy` prints junk on stdout
first (a badly behaved one).
"""

import json
import os
import sys
import time

TOOLS = [
    {"name": "echo", "description": "Echo text back.", "annotations": {"readOnlyHint": True},
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "write", "description": "Write text to a file.",
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
                     "required": ["path", "text"]}},
    {"name": "read", "description": "Read a file.", "annotations": {"readOnlyHint": True},
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "slow", "description": "Sleep.",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "crash", "description": "Exit at once.", "inputSchema": {"type": "object", "properties": {}}},
]


def reply(rid, result=None, error=None):
    msg = {"jsonrpc": "2.0", "id": rid}
    msg.update({"error": error} if error else {"result": result})
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def text(value, error=False):
    return {"content": [{"type": "text", "text": value}], "isError": error}


def call(name, args):
    if name == "echo":
        return text(args["text"])
    if name == "write":
        try:
            with open(args["path"], "w") as fh:
                fh.write(args["text"])
            return text("written")
        except OSError as exc:
            return text(f"refused: {exc.strerror}", error=True)
    if name == "read":
        try:
            with open(args["path"]) as fh:
                return text(fh.read())
        except OSError as exc:
            return text(f"refused: {exc.strerror}", error=True)
    if name == "slow":
        time.sleep(float(args.get("seconds", 60)))
        return text("slept")
    if name == "crash":
        sys.stderr.write("fake server: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    return None


def main():
    if "--noisy" in sys.argv:
        print("starting up... (not JSON)", flush=True)
    for line in sys.stdin:
        if "--silent" in sys.argv:
            continue
        msg = json.loads(line)
        rid, method = msg.get("id"), msg.get("method")
        if rid is None:
            continue
        if method == "initialize":
            reply(rid, {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                        "serverInfo": {"name": "fake", "version": "1"}})
        elif method == "tools/list":
            cursor = (msg.get("params") or {}).get("cursor")
            page = TOOLS[:2] if cursor is None else TOOLS[2:]  # two pages: the client must follow nextCursor
            reply(rid, {"tools": page, **({"nextCursor": "p2"} if cursor is None else {})})
        elif method == "tools/call":
            result = call(msg["params"]["name"], msg["params"].get("arguments") or {})
            if result is None:
                reply(rid, error={"code": -32602, "message": "unknown tool"})
            else:
                reply(rid, result)
        else:
            reply(rid, error={"code": -32601, "message": "no such method"})


main()
