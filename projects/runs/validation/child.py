"""`python -m projects.runs.validation.child CHECK SPEC.json`: a check that loads a model, run in a child process.

CHECK names the check: "inference" (loading, inference and the base vs fine-tuned comparison;
projects.runs.validation.inference_child) or "preference" (the DPO preference check;
projects.runs.validation.preference_child). SPEC is a JSON file of the check's inputs. The child prints one line
`MTM_RESULT {json}`: the check's result, or {"error": "..."} when the check itself failed (its traceback goes to
stderr). A crash in here cannot take the worker down, and memory is returned when the process ends.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from projects.runs.validation import inference_child, preference_child

RESULT_PREFIX = "MTM_RESULT "
CHECKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "inference": inference_child.run,
    "preference": preference_child.run,
}
USAGE = f"usage: python -m projects.runs.validation.child {{{','.join(CHECKS)}}} SPEC.json"
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in CHECKS:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    check, spec_path = args
    try:
        with open(spec_path, encoding="utf-8") as fh:
            spec = json.load(fh)
        result = CHECKS[check](spec)
    except Exception as exc:
        print(traceback.format_exc(), file=sys.stderr)
        result = {"error": f"The {check} check failed: {type(exc).__name__}: {exc}"}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
