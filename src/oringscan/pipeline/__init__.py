"""oringscan.pipeline"""
