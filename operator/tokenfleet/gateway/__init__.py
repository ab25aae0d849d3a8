"""The OpenAI-compatible gateway in front of the whole fleet (``tokenfleet gateway``).

- :mod:`tokenfleet.gateway.table`: the routing table from EndpointSlices, jobs and nodes (pure);
- :mod:`tokenfleet.gateway.keys`: API keys from Secrets and per-key token buckets (pure);
- :mod:`tokenfleet.gateway.api`: OpenAI request parsing, errors and response shapes (pure);
- :mod:`tokenfleet.gateway.server`: the aiohttp application (routing, retries, streaming);
- :mod:`tokenfleet.gateway.watch`: Kubernetes watches feeding the table and the keys;
- :mod:`tokenfleet.gateway.main`: the ``tokenfleet gateway`` command.
"""
