"""The runtime: runners for every backend, the wire protocol, and the device and edge roles.

By role, each importing only what is below it: protocol.py, codec.py and security.py are shared;
client.py is the client side (EdgeClient, the Lazy Pirate retry, an edge's Upstream link), which
triton.py builds on for Triton; run.py is the device (`tlcut run`) and adapt.py its adaptive policy;
edge.py is the edge's core, batching.py, forward.py and tiles.py the pieces beside it, and serve.py
(`tlcut serve`) assembles an edge from a bundle. The device and the edge never import each other.
"""
