"""Streamlit page script; the page itself is oringscan.dashboard.page_frame."""

from oringscan.dashboard.page_frame import render
from oringscan.dashboard.ui import guarded

guarded(render)
