"""A stand-in notify_command: appends its arguments and ORPO_* environment, as one JSON
line, to the file named by its first argument."""

import json
import os
import sys

with open(sys.argv[1], "a", encoding="utf-8") as fh:
    env = {k: v for k, v in os.environ.items() if k.startswith("ORPO_RUN") or k == "ORPO_VAL_LOSS"}
    fh.write(json.dumps({"argv": sys.argv[2:], "env": env}) + "\n")
