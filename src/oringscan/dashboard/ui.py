"""What every page shares: settings, the one database connection, image roots, small widgets."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from oringscan.dashboard.images import ImageRoots
from oringscan.dashboard.settings import DashboardSettings
from oringscan.errors import OringscanError

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them
# also defuses Streamlit's own syntax (:red[...], :material/icon:, $math$, <html>).
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def md(text: Any) -> str:
    """Text from the database, a file name or a user, made safe to put inside Streamlit markdown.

    One line (line breaks could start new markdown blocks), every punctuation character escaped,
    so a name such as ``**boss**`` or ``[x](http://...)`` is shown as typed, never interpreted.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def settings() -> DashboardSettings:
    """The CLI's settings, or a one-line error on the page (and the page stops)."""
    try:
        return DashboardSettings.from_env()
    except OringscanError as exc:
        st.error(md(exc))
        st.stop()
        raise  # unreachable: st.stop ends the script run


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Any:
    from oringscan.db import InspectionStore

    return InspectionStore(url)


def store() -> Any:
    """The database for this dashboard (one engine per URL for the whole server)."""
    url = settings().db_url
    try:
        return _store(url)
    except OringscanError as exc:
        st.error(md(exc))
    except Exception as exc:  # a database that cannot be opened: say which and why, in one line
        st.error(
            md(f"{safe_url(url)}: cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        )
    st.stop()
    raise AssertionError("unreachable")


@st.cache_resource(show_spinner=False)
def _roots(roots: tuple[str, ...]) -> ImageRoots:
    return ImageRoots.of(roots)


def image_roots() -> ImageRoots:
    return _roots(tuple(str(p) for p in settings().image_roots))


def safe_url(url: str) -> str:
    """The database URL with any password masked (it is shown on pages)."""
    from oringscan.db.store import safe_url as masked

    return masked(url)


def header(title: str, caption: str | None = None) -> None:
    """Page title (the page's own words) and caption (escaped: it may hold file names)."""
    st.title(title)
    st.caption(md(caption or f"database: {safe_url(settings().db_url)}"))


VERDICT_BADGES = {
    "good": ":green-badge[good]",
    "defect": ":red-badge[defect]",
    "rework": ":orange-badge[rework]",
    "suspect": ":violet-badge[suspect]",
    "error": ":gray-badge[error]",
}
DECISION_LABELS = {"defect": "Confirm defect", "good": "Override to good", "rework": "Rework"}


def verdict_badge(verdict: str | None) -> str:
    return VERDICT_BADGES.get(verdict or "", f":gray-badge[{md(verdict or 'none')}]")


def keep_widget_state(*keys: str) -> None:
    """Let filter widgets keep their values when the user visits another page and comes back.

    Streamlit forgets a widget's state once a run does not draw it; a shadow copy under another
    key survives, and is copied back before the widget is drawn again.
    """
    for key in keys:
        shadow = f"_kept_{key}"
        if key not in st.session_state and shadow in st.session_state:
            st.session_state[key] = st.session_state[shadow]


def remember_widget_state(*keys: str) -> None:
    for key in keys:
        if key in st.session_state:
            st.session_state[f"_kept_{key}"] = st.session_state[key]


def utc_text(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def guarded(render: Any) -> None:
    """Run a page; a database or oringscan error becomes one line on the page, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        render()
    except OringscanError as exc:
        st.error(md(exc))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        st.error(
            md(f"{safe_url(settings().db_url)}: database error: {first[0] if first else type(exc).__name__}")
        )
