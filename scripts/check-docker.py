#!/usr/bin/env python3
"""Checks docker/ where no Docker engine runs: the compose file parses, its
services build from files that exist, and every SWITCHBOARD_* variable it
sets is one the service reads (src/config.rs). hadolint lints the
Dockerfile separately (.ci/run)."""
import pathlib
import re
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
compose = yaml.safe_load((root / "docker/compose.yaml").read_text())
config = (root / "src/config.rs").read_text()
known = set(re.findall(r'"(SWITCHBOARD_[A-Z0-9_]+)"', config)) | {"DATABASE_URL"}
problems = []
services = compose.get("services", {})
for name, service in services.items():
    build = service.get("build")
    if build:
        dockerfile = root / "docker" / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        if not dockerfile.resolve().is_file():
            problems.append(f"{name}: no {dockerfile}")
    elif "image" not in service:
        problems.append(f"{name}: neither build nor image")
    for variable in (service.get("environment") or {}):
        if variable.startswith("SWITCHBOARD_") or variable == "DATABASE_URL":
            if variable not in known:
                problems.append(f"{name}: {variable} is not a setting of the service")
    for needed in (service.get("depends_on") or {}):
        if needed not in services:
            problems.append(f"{name}: depends on unknown service {needed}")
if "mail" not in services:
    problems.append("no SMTP catcher service")
dockerfile = (root / "docker/Dockerfile").read_text()
if "HEALTHCHECK" not in dockerfile or "/readyz" not in dockerfile:
    problems.append("the Dockerfile has no health check on /readyz")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"docker/compose.yaml: {len(services)} services, settings known")
