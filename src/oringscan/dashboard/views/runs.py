"""Streamlit page script; the page itself is oringscan.dashboard.page_runs."""

from oringscan.dashboard.page_runs import render
from oringscan.dashboard.ui import guarded

guarded(render)
