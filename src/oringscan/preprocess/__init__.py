"""oringscan.preprocess"""
