"""Print an installed distribution's requirements (no extras), one a line, less the ones named after it.

    python requirements_of.py llamafactory torchvision torchaudio

run.sh installs a framework with --no-deps and then these, so that the framework's own pins on torchvision /
torchaudio (which would pull a CUDA torch over the CPU build) are left out; run.sh says which it dropped.
"""

import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

name, dropped = sys.argv[1], {n.lower() for n in sys.argv[2:]}
for line in requires(name) or []:
    requirement = Requirement(line)
    if requirement.name.lower() in dropped:
        continue
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue  # an extra's requirement, or one for another platform
    print(str(requirement).split(";")[0].strip())
