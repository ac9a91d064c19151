"""The tasks beside the default one (data.py's left-to-right arithmetic).

countdown.py  the countdown game: combine numbers of a pool into a target, where a correct
              line can be a dead end (issue "a task where steps are choices")
"""
