"""Lab tools, apart from what runs in production: the testbed (namespaces, shaped links, CPU
quotas), the delay relay, the demo, and `tlcut perf`. The runtime never imports them."""
