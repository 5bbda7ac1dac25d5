"""Streamlit page script; the page itself is oringscan.dashboard.page_diff."""

from oringscan.dashboard.page_diff import render
from oringscan.dashboard.ui import guarded

guarded(render)
