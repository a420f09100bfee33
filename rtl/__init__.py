"""nascaps.rtl"""
