"""Login on the dashboard: a Streamlit form, the user kept in this browser session's state.

With ``require_login`` every page waits for a login and decisions are recorded as the logged-in
user (name and id), never a typed name. Roles come from ``oringscan.db.users.PERMISSIONS``:
operators may review, engineers may also change settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from oringscan.dashboard import ui

SESSION_KEY = "_oringscan_user"


@dataclass(frozen=True, slots=True)
class SessionUser:
    id: int
    name: str
    role: str

    def may(self, action: str) -> bool:
        from oringscan.db.users import PERMISSIONS

        return action in PERMISSIONS.get(self.role, frozenset())


def current_user() -> SessionUser | None:
    """The logged-in user of this browser session (None when nobody is, or login is off)."""
    data = st.session_state.get(SESSION_KEY)
    return None if data is None else SessionUser(**data)


def login_required() -> bool:
    return ui.settings().require_login


def may(action: str) -> bool:
    """Whether this session may ``action``: anyone when login is off, else by the user's role."""
    if not login_required():
        return True
    user = current_user()
    return user is not None and user.may(action)


def _log_in(store: Any) -> None:
    from oringscan.db.users import authenticate

    state = st.session_state
    name = str(state.get("login_name") or "").strip()
    password = str(state.get("login_password") or "")
    state["login_password"] = ""
    user = authenticate(store, name, password)
    if user is None:
        state["_login_message"] = "Wrong name or password (or the account is disabled)."
        return
    state[SESSION_KEY] = {"id": user.id, "name": user.name, "role": user.role}
    state.pop("_login_message", None)


def _log_out() -> None:
    st.session_state.pop(SESSION_KEY, None)


def gate() -> bool:
    """Draw the login form when login is required and nobody is logged in; True when pages may run."""
    if not login_required():
        return True
    user = current_user()
    if user is not None:
        with st.sidebar:
            st.caption(f"Logged in as **{ui.md(user.name)}** ({user.role})")
            st.button("Log out", key="logout", on_click=_log_out, icon=":material/logout:")
        return True
    store = ui.store()
    st.title("oringscan review")
    st.caption(f"database: {ui.md(ui.safe_url(ui.settings().db_url))}")
    from oringscan.db.users import count_users

    if count_users(store) == 0:
        st.error(
            "No dashboard users yet: an engineer adds them with `oringscan users add NAME --role "
            "operator|engineer` (same database)."
        )
        return False
    with st.form("login", border=True):
        st.text_input("Name", key="login_name", max_chars=128)
        st.text_input("Password", type="password", key="login_password")
        st.form_submit_button(
            "Log in", type="primary", on_click=_log_in, args=(store,), icon=":material/login:"
        )
    message = st.session_state.get("_login_message")
    if message:
        st.error(message)
    return False
