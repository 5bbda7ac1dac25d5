"""The ``oringscan`` command line: a thin shell over each part's Python API."""
