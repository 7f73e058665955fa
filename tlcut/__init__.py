"""tlcut: cut a DNN between a device and an edge server, with a Transfer Layer at the cut.

The subpackages follow the pipeline: ``tlcut.toolchain`` (export, cuts, surgery, compile, bench,
plan), ``tlcut.runtime`` (runners, wire protocol, serve, run, testbed) and ``tlcut.models``
(architectures and datasets). ``tlcut.bundle`` describes the directory every step reads and writes.
"""

__version__ = "0.1.0"
