"""The resumable stream's one home: its contract (``contract.py``) and the runtime that owns every
read of a message's stream (``runtime.py``: replay, gap fill, live tail, deletion).

See ARCHITECTURE.md, "Streams".
"""
