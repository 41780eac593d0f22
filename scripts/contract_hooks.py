"""schemathesis hooks for `contract.py`: every `url` in a generated body
becomes the loopback receiver, so the webhook SSRF guard never looks up (and
the service never calls) a generated hostname. The sender API is asked
without `?wait=true`: generated calls to one chat wait their turns (one a
second), which would run past the request timeout; the waiting is tested in
the Rust suite."""

import os

import schemathesis

RECEIVER = os.environ["CONTRACT_RECEIVER"]


@schemathesis.hook
def before_call(context, case, kwargs):
    if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body["url"] = RECEIVER
    if isinstance(case.query, dict) and "wait" in case.query:
        case.query["wait"] = False
