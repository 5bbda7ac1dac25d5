"""oringscan.segmentation"""
