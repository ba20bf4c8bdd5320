"""Dependency audit: the installed environment against the PyPI advisory database (pip-audit).

Every advisory is reported. The build fails only on an advisory that has a fixed
version to move to; one without a fix is reported and left to judgement. Without
network access (CI here) the audit says it could not run, and does not fail.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off", "--skip-editable",
         "--timeout", "20"],
        capture_output=True, text=True,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"dependency audit could not run (no advisory database reachable?): {reason}")
        return 0
    fixable = []
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            print(f"{dep['name']} {dep['version']}: {vuln['id']} "
                  f"{'fixed in ' + ', '.join(fixes) if fixes else 'no fix released'}")
            if fixes:
                fixable.append(f"{dep['name']} {dep['version']} -> {fixes[0]} ({vuln['id']})")
    audited = len(report.get("dependencies", []))
    if fixable:
        print(f"dependency audit: {len(fixable)} advisories with a fix, upgrade: " + "; ".join(fixable))
        return 1
    print(f"dependency audit: {audited} packages, no advisory with a fix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
