"""Checks recorded webhook deliveries with the official Standard Webhooks
library (`pip install standardwebhooks`).

Input: a JSON file, a list of {"secret", "headers", "body", "valid"}; each
delivery must verify exactly when "valid" is true. Exit status 0 when all
do, 1 otherwise. Run by the integration tests when STANDARDWEBHOOKS_PYTHON
names an interpreter that has the library (`.ci/run` sets one up).
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        samples = json.load(f)
    failures = 0
    for n, sample in enumerate(samples):
        try:
            Webhook(sample["secret"]).verify(sample["body"].encode("utf-8"), sample["headers"])
            verified = True
        except WebhookVerificationError:
            verified = False
        if verified != sample["valid"]:
            failures += 1
            print(f"sample {n}: verified={verified}, expected {sample['valid']}")
    print(f"{len(samples) - failures} of {len(samples)} samples as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
