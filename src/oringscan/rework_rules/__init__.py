"""oringscan.rework_rules"""
