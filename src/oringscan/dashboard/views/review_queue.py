"""Streamlit page script; the page itself is oringscan.dashboard.page_queue."""

from oringscan.dashboard.page_queue import render
from oringscan.dashboard.ui import guarded

guarded(render)
