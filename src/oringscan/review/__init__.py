"""oringscan.review: what operators mark on reviewed frames, and exporting it as training data.

``shapes`` (marks and their checks, light: the store and the CLI use it), ``export`` (reviewed
frames into the seed layout ``preprocess`` reads), ``hotspots`` (where on a frame to look first).
"""
