"""oringscan.dashboard"""
