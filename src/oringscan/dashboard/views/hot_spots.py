"""Streamlit page script; the page itself is oringscan.dashboard.page_spots."""

from oringscan.dashboard.page_spots import render
from oringscan.dashboard.ui import guarded

guarded(render)
