"""Streamlit page scripts (run by app.py via st.navigation, not imported)."""
