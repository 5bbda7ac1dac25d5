"""What the running dashboard needs to know, handed from the CLI to the Streamlit script.

Streamlit runs the app as a script, so settings cannot be passed as arguments; they travel in one
environment variable as JSON (robust for Windows paths with spaces), read back on every rerun.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from oringscan.config import Config
from oringscan.errors import ConfigError
from oringscan.review.shapes import known_labels

ENV_VAR = "ORINGSCAN_DASHBOARD"


@dataclass(slots=True)
class DashboardSettings:
    """Database, the folders images may come from, and display choices."""

    db_url: str
    image_roots: list[Path] = field(default_factory=list)
    page_size: int = 25
    # Drawn on the score histogram next to the threshold (scores above it x threshold are "marginal").
    marginal_fraction: float | None = None
    # Users log in and decisions are theirs. `oringscan dashboard` takes it from [dashboard]
    # require_login (default on); settings read back without the key fail closed (login on).
    require_login: bool = False
    # The labels a reviewer may give a marked defect (the config's classes and label-map keys);
    # None: any (settings from an older CLI).
    classes: list[str] | None = None

    @classmethod
    def from_config(
        cls, config: Config, db_url: str, data_root: Path, output_root: Path
    ) -> DashboardSettings:
        roots = [*config.dashboard.image_roots, data_root, output_root]
        return cls(
            db_url=db_url,
            image_roots=[Path(r) for r in roots],
            page_size=config.dashboard.page_size,
            marginal_fraction=config.screening.marginal_fraction,
            require_login=config.dashboard.require_login,
            classes=known_labels(config.classes),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "db_url": self.db_url,
                "image_roots": [str(p) for p in self.image_roots],
                "page_size": self.page_size,
                "marginal_fraction": self.marginal_fraction,
                "require_login": self.require_login,
                "classes": self.classes,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DashboardSettings:
        try:
            data = json.loads(text)
            return cls(
                db_url=str(data["db_url"]),
                image_roots=[Path(p) for p in data.get("image_roots", [])],
                page_size=int(data.get("page_size", 25)),
                marginal_fraction=None
                if data.get("marginal_fraction") is None
                else float(data["marginal_fraction"]),
                require_login=bool(data.get("require_login", True)),
                classes=None if data.get("classes") is None else [str(c) for c in data["classes"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{ENV_VAR}: not valid dashboard settings JSON: {exc}") from None

    def export(self) -> None:
        """Put the settings where the Streamlit script finds them."""
        os.environ[ENV_VAR] = self.to_json()

    @classmethod
    def from_env(cls) -> DashboardSettings:
        text = os.environ.get(ENV_VAR)
        if not text:
            raise ConfigError(
                f"{ENV_VAR} is not set: start the dashboard with `oringscan dashboard` "
                "(it sets the database and image roots)"
            )
        return cls.from_json(text)
