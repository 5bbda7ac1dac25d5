"""Streamlit page script; the page itself is oringscan.dashboard.page_queue."""

from oringscan.dashboard.page_queue import render

render()
