"""Known warnings of dependencies, silenced exactly where they are emitted (never globally).

Each filter names the warning it hides and why it is no concern of an oringscan user.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def anomalib_import() -> Iterator[None]:
    """Import anomalib modules without the FutureWarnings anomalib 2.7 triggers on import.

    - timm 1.0: "Importing from timm.models.layers is deprecated, please import via timm.layers"
      (anomalib's own modules still import the old path; nothing for us to change).
    - anomalib 2.7: "The anomalib.models.components.dinov2 package is deprecated ..." (emitted when
      anomalib.models imports its Dinomaly model; oringscan uses PatchCore only).
    Once the modules are imported they are cached, so the filters are needed only around the import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Importing from timm\.models\.layers is deprecated", FutureWarning)
        warnings.filterwarnings(
            "ignore", r"The anomalib\.models\.components\.dinov2 package is deprecated", FutureWarning
        )
        yield
