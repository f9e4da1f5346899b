"""fgalign inside other engines: a verl reward plug-in and an OpenRLHF remote reward.

These modules import fgalign and the engine; fgalign itself never imports them (the engines pin their own
versions, so each is an optional extra installed into an environment of its own).
"""
