"""Secret attacks: host variables and API keys in any /proc/*/environ."""

from __future__ import annotations

import json
import re

from rlm.sandbox.execution import Execution
from rlm.security.model import attack
from rlm.security.runner import CheckContext
from rlm.security.verify import _missing, report_of

# --------------------------------------------------------------------------- secrets
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.I)


def _verify_environ(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    blob = json.dumps(data)
    canaries = dict(ctx.canaries.env_values, secret_file=ctx.canaries.secret_text)
    leaked = [name for name, value in canaries.items() if value in blob or value in execution.output]
    path_leaked = ctx.canaries.secret_path is not None and str(ctx.canaries.dir) in blob
    names = set(data["names"])
    for text in data["blobs"].values():
        names |= {kv.split("=", 1)[0] for kv in text.split("\0") if "=" in kv}
    suspicious = sorted(n for n in names if _SECRET_NAME.search(n))
    ok = not leaked and not suspicious and not path_leaked
    return ok, (f"{len(data['blobs'])} environ/cmdline files: no canary, no secret-like variable "
                f"({len(names)} variables)" if ok else
                f"LEAK: canaries {leaked}, variables {suspicious}, secret folder path visible: {path_leaked}")


attack("secrets_environ", "secrets", "no host variable, API key or secret in any /proc/*/environ", r"""
    import os
    blobs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for f in ("environ", "cmdline"):
                try:
                    blobs[f"{pid}/{f}"] = open(f"/proc/{pid}/{f}", "rb").read().decode("utf-8", "replace")
                except OSError as exc:
                    blobs[f"{pid}/{f}"] = "unreadable:" + type(exc).__name__
    blobs["mountinfo"] = open("/proc/self/mountinfo").read()
    report(blobs=blobs, names=sorted(os.environ))
""", _verify_environ)
