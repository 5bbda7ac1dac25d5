"""The Streamlit script behind `oringscan dashboard`: page navigation only, pages live in views/."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from oringscan.dashboard import auth

VIEWS = Path(__file__).parent / "views"

st.set_page_config(page_title="oringscan review", page_icon=":material/donut_large:", layout="wide")
if not auth.gate():  # login required and nobody logged in yet: the form is all this run shows
    st.stop()
navigation = st.navigation(
    [
        st.Page(
            VIEWS / "review_queue.py",
            title="Review queue",
            icon=":material/checklist:",
            url_path="queue",
            default=True,
        ),
        st.Page(
            VIEWS / "frame_view.py", title="Frame view", icon=":material/image_search:", url_path="frame"
        ),
        st.Page(
            VIEWS / "hot_spots.py", title="Hot spots", icon=":material/center_focus_strong:", url_path="spots"
        ),
        st.Page(VIEWS / "overview.py", title="Overview", icon=":material/monitoring:", url_path="overview"),
        st.Page(VIEWS / "runs.py", title="Runs", icon=":material/history:", url_path="runs"),
        st.Page(VIEWS / "run_diff.py", title="Run diff", icon=":material/compare_arrows:", url_path="diff"),
    ]
)
navigation.run()
