"""oringscan.screening"""
