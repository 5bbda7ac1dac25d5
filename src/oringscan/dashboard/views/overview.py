"""Streamlit page script; the page itself is oringscan.dashboard.page_overview."""

from oringscan.dashboard.page_overview import render
from oringscan.dashboard.ui import guarded

guarded(render)
