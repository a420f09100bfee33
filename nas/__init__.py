"""nascaps.nas"""
