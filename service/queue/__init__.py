"""Job store and queue: the wire contract (constants, jobs), the interface and its two backends."""
