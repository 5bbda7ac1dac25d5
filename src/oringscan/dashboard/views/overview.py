"""Streamlit page script; the page itself is oringscan.dashboard.page_overview."""

from oringscan.dashboard.page_overview import render

render()
