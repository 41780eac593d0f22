"""schemathesis hooks for `contract.py`: every `url` in a generated body
becomes the loopback receiver, so the webhook SSRF guard never looks up (and
the service never calls) a generated hostname."""

import os

import schemathesis

RECEIVER = os.environ["CONTRACT_RECEIVER"]


@schemathesis.hook
def before_call(context, case, kwargs):
    if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body["url"] = RECEIVER
