"""oringscan.synth"""
