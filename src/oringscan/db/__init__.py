"""oringscan.db"""
