"""Streamlit page script; the page itself is oringscan.dashboard.page_runs."""

from oringscan.dashboard.page_runs import render

render()
