"""Print pip constraints pinning every dependency of pyproject.toml to its lower bound.

`make test-min` installs these into a fresh environment: the declared floors are then
what is tested, written in one place (pyproject.toml).
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
for requirement in project["project"]["dependencies"]:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?>=([^,;\s]+)", requirement.strip())
    if match is None:
        sys.exit(f"error: {requirement!r}: expected NAME>=VERSION")
    print(f"{match.group(1)}=={match.group(3)}")
