"""Starting the Streamlit server for the dashboard (in this process, no `streamlit run` shell-out)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from oringscan.dashboard.settings import DashboardSettings
from oringscan.errors import ConfigError

APP_SCRIPT = Path(__file__).with_name("app.py")
log = logging.getLogger("oringscan.dashboard")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_database_url(url: str) -> None:
    """Refuse an unparsable URL or a SQLite file that does not exist (it would be created empty)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{url}: not a database URL (e.g. sqlite:///output/inspections.db)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.is_file():
            raise ConfigError(
                f"{path}: no inspection database here; run `oringscan inspect` or `oringscan demo` first, "
                "or pass --db URL"
            )


def check_login_setup(settings: DashboardSettings, host: str) -> None:
    """Refuse to serve where someone could record decisions under another's name.

    Off this machine (any address but loopback) login is required; with login on, at least one
    user must exist, or nobody could log in. Each refusal is one line saying how to set it up.
    """
    if not settings.require_login:
        if not is_loopback(host):
            raise ConfigError(
                f"dashboard on {host} without login: anyone on the network could record decisions under any name; "
                "set `require_login = true` under [dashboard] in the config (the default) and add users with "
                "`oringscan users add NAME --role operator|engineer`, or bind to 127.0.0.1"
            )
        return
    from oringscan.db import InspectionStore, safe_url
    from oringscan.db.users import count_users

    store = InspectionStore(settings.db_url)
    try:
        if count_users(store) == 0:
            raise ConfigError(
                f"{safe_url(settings.db_url)}: no dashboard users yet; add one with `oringscan users add NAME "
                "--role engineer` (same --db), or on 127.0.0.1 only set `require_login = false` under [dashboard]"
            )
    finally:
        store.dispose()


def streamlit_options(host: str, port: int) -> dict[str, object]:
    """Streamlit flags: bound where asked, no telemetry, no file watching, no static file serving."""
    return {
        "server_address": host,
        "server_port": port,
        "server_headless": True,
        "server_fileWatcherType": "none",
        "server_runOnSave": False,
        "server_enableStaticServing": False,
        "browser_gatherUsageStats": False,
        "browser_serverAddress": host,
        "browser_serverPort": port,
        "global_developmentMode": False,
        "client_toolbarMode": "viewer",
        "client_showErrorDetails": "type",
        "theme_base": "light",
    }


def launch(settings: DashboardSettings, host: str = "127.0.0.1", port: int = 8501) -> None:
    """Serve the dashboard until interrupted (blocks)."""
    from streamlit import config as st_config
    from streamlit.web import bootstrap

    check_database_url(settings.db_url)
    check_login_setup(settings, host)
    if not is_loopback(host):
        log.warning(
            "dashboard bound to %s: reachable from the network on port %d (login required)", host, port
        )
    settings.export()
    options = streamlit_options(host, port)
    st_config._main_script_path = str(APP_SCRIPT)
    bootstrap.load_config_options(flag_options=options)
    bootstrap.run(str(APP_SCRIPT), False, [], options)
