"""nascaps.sim"""
