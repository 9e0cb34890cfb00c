#!/bin/sh
# Any CI system (GitLab CI, Jenkins, Buildkite, ...): after the tests failed,
# let the agent fix them in the sandbox and keep the patch as an artifact.
# Needs Python 3.11+, git, and a model key in the job's secrets.
set -eu
python3 -m pip install --quiet stockade            # or: pip install path/to/stockade
export STOCKADE_PROVIDER=anthropic                   # ANTHROPIC_API_KEY comes from the CI secrets
status=0
stockade-fix --patch artifacts/fix.patch --summary artifacts/summary.md \
  --events artifacts/events.jsonl -- pytest -q || status=$?
# 0: the tests pass (artifacts/fix.patch holds the fix, empty if none was needed)
# 1: they still fail (the patch holds the agent's attempt); 2/4/125: configuration, model, sandbox
cat artifacts/summary.md
exit "$status"
